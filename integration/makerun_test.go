package integration

import (
	"fmt"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// `make run`, the README's first command, builds baton and serves the demo
// from at least two workers, and says what to try next.
func TestMakeRun(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed: ", err)
	}
	port := freePort(t)
	p := start(t, nil, "make", "--no-print-directory", "run", fmt.Sprintf("PORT=%d", port))
	p.out.wait(regexp.MustCompile(`try, in another terminal`), 3*time.Minute)
	p.out.wait(reAllReady, time.Minute)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	pids := map[string]bool{}
	for i := 0; i < 200 && len(pids) < 2; i++ {
		body, err := getOnce(addr, "/")
		if err != nil {
			t.Fatalf("GET %s: %v", addr, err)
		}
		if !regexp.MustCompile(`^hello from pid \d+\n$`).MatchString(body) {
			t.Fatalf("body %q, want \"hello from pid N\"", body)
		}
		pids[body] = true
	}
	if len(pids) < 2 {
		t.Errorf("answers came from %d worker pids, want at least 2", len(pids))
	}
	// Ctrl-C, as the hint says: the whole foreground group gets SIGINT.
	p.descendants()
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
	p.waitExit(40 * time.Second)
}
