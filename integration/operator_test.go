package integration

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// baton scale 4, scale 1, restart 0, scale +1 under load, in both modes:
// every command waits for its outcome, the pool is what it said, and no
// request fails. Then baton stop drains everything and waits for baton's
// exit.
func TestOperatorCommandsUnderLoad(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			control := filepath.Join(t.TempDir(), "ctl.sock")
			b := startBaton(t, "--workers", "2", "--control", control, "--", bin.hello)
			g := startLoad(t, b.addr, mode, 32)
			waitServed(t, g, 300)
			for _, step := range []struct {
				args    []string
				workers int
			}{{[]string{"scale", "4"}, 4}, {[]string{"scale", "1"}, 1}, {[]string{"restart", "0"}, 1}, {[]string{"scale", "+1"}, 2}} {
				before, _ := statusRows(t, control)
				code, out := ctl(t, append(step.args, "--control", control)...)
				if code != 0 || !strings.Contains(out, "ok: generation 1 serving with ") {
					t.Fatalf("baton %v: exit %d: %s", step.args, code, out)
				}
				// What drains leaves; what serves is what the command said.
				var pids []int
				var states []string
				for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
					if pids, states = statusRows(t, control); len(pids) == step.workers || time.Now().After(deadline) {
						break
					}
				}
				if len(pids) != step.workers || strings.Join(states, " ") != strings.TrimSpace(strings.Repeat("ready ", step.workers)) {
					t.Errorf("after baton %v: workers %v %v, want %d ready", step.args, pids, states, step.workers)
				}
				if step.args[0] == "restart" && pids[0] == before[0] {
					t.Errorf("baton restart 0: slot 0 is still pid %d", pids[0])
				}
				waitServed(t, g, 300)
			}
			r := g.Stop()
			t.Logf("%s", r)
			if r.Failed() != 0 {
				t.Errorf("%d requests failed: %s %v", r.Failed(), r, r.Samples)
			}
			code, out := ctl(t, "stop", "--control", control)
			if code != 0 || !strings.Contains(out, "stop ok") {
				t.Errorf("baton stop: exit %d: %s", code, out)
			}
			select {
			case <-b.exited:
			case <-time.After(5 * time.Second):
				t.Error("baton stop returned, baton is still running")
				syscall.Kill(b.cmd.Process.Pid, syscall.SIGKILL)
			}
		})
	}
}
