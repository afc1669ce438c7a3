package integration

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/loadtest"
)

// Workers in other languages serve under baton through the plain
// socket-activation protocol: Node (non-blocking, readiness on the fd) and a
// standard-library Python server with a blocking accept on fd 3 (READY=1
// on NOTIFY_SOCKET). If baton handed the socket over non-blocking, the
// Python accept would fail with EAGAIN.
func TestOtherLanguageWorkers(t *testing.T) {
	tests := []struct {
		name, interp, script, ready string
	}{
		{"node", "node", "contrib/node/server.js", "fd"},
		{"python", "python3", "contrib/python/server.py", "notify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			interp, err := exec.LookPath(tt.interp)
			if err != nil {
				t.Skipf("%s is not installed: %v", tt.interp, err)
			}
			b := startBaton(t, "--workers", "2", "--ready", tt.ready, "--", interp, filepath.Join(repoRoot, tt.script))
			if tt.name == "python" {
				// A worker's line may reach baton's output after its READY=1.
				re := regexp.MustCompile(`python: serving on .* \(listener blocking\)`)
				for deadline := time.Now().Add(10 * time.Second); b.out.count(re) != 2 && time.Now().Before(deadline); {
					time.Sleep(10 * time.Millisecond)
				}
				if b.out.count(re) != 2 {
					t.Errorf("the Python workers did not get the listener in blocking mode:\n%s", b.out)
				}
			}
			for _, mode := range modes {
				r, err := loadtest.Run(withTimeout(t, time.Minute), loadtest.Options{Addr: b.addr, Concurrency: 8, Requests: 400, Mode: mode})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s", r)
				if r.Failed() != 0 || r.OK != 400 {
					t.Errorf("%s worker: %s %v", tt.name, r, r.Samples)
				}
			}
			body, err := getOnce(b.addr, "/")
			if err != nil || !strings.HasPrefix(body, "hello from pid") {
				t.Errorf("GET / = %q, %v", body, err)
			}
			syscall.Kill(b.cmd.Process.Pid, syscall.SIGTERM)
			if code := b.waitExit(40 * time.Second); code != 0 {
				t.Errorf("baton exited %d after SIGTERM, want 0", code)
			}
		})
	}
}
