package integration

import (
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
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
	hint := p.out.wait(regexp.MustCompile(`^baton \(pid (\d+)\): .*try, in another terminal`), 3*time.Minute)
	p.out.wait(reAllReady, time.Minute)
	// The pid it prints is baton's, and baton reload --pid takes it; the
	// worker pid it says to kill is one of baton's workers.
	pid := regexp.MustCompile(`pid (\d+)`).FindStringSubmatch(hint)[1]
	p.out.wait(regexp.MustCompile(`^  Ctrl-C here`), time.Minute) // the hint's last line
	out := p.out.String()
	for _, cmd := range []string{"\n  bin/baton status ", "\n  bin/baton logs -f ", "\n  bin/baton reload ", "bin/baton reload --pid " + pid + ")"} {
		if !strings.Contains(out, cmd) {
			t.Errorf("make run does not say %q:\n%s", strings.TrimSpace(cmd), out)
		}
	}
	n, _ := strconv.Atoi(pid)
	if comm(n) != "baton" || !slices.Contains(p.descendants(), n) {
		t.Errorf("make run printed pid %s, which is %q, not the baton it started", pid, comm(n))
	}
	if m := regexp.MustCompile(`\n  kill -9 (\d+) `).FindStringSubmatch(out); m == nil {
		t.Errorf("make run names no worker to kill:\n%s", out)
	} else if w, _ := strconv.Atoi(m[1]); !slices.Contains(children(n), w) {
		t.Errorf("make run says to kill pid %d, which is no worker of baton %d (%v)", w, n, children(n))
	}
	if code, out := ctl(t, "reload", "--pid", pid); code != 0 {
		t.Errorf("baton reload --pid %s, as make run says: exit %d: %s", pid, code, out)
	}
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
