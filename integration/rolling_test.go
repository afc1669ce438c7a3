package integration

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// A rolling reload of 4 workers with reload.surge = 1 never runs more than
// 5 worker processes, and no request fails; one whose new config breaks
// at the third slot rolls back to 4 old-config workers, failing nothing.
func TestRollingReload(t *testing.T) {
	rolling := func(command []string) func(addr string) string {
		return func(addr string) string {
			return strings.Replace(batonConfig(addr, 4, command, ""), "[reload]\n", "[reload]\nsurge = 1\n", 1)
		}
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			b := startConfigBaton(t, hellos(4, ""))
			pid := b.cmd.Process.Pid
			g := startLoad(t, b.addr, mode, 32)
			waitServed(t, g, 300)

			// Count baton's worker processes all along.
			var mu sync.Mutex
			peak, low := 0, 1<<30
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					n := len(children(pid))
					mu.Lock()
					peak, low = max(peak, n), min(low, n)
					mu.Unlock()
					select {
					case <-stop:
						return
					case <-time.After(2 * time.Millisecond):
					}
				}
			}()
			b.write(t, rolling(nil)(b.addr))
			code, out := b.reloadCmd(t)
			close(stop)
			<-done
			if code != 0 {
				t.Fatalf("rolling reload: exit %d: %s", code, out)
			}
			t.Logf("rolling reload: %s; worker processes between %d and %d", strings.TrimSpace(out), low, peak)
			if peak != 5 || low < 4 {
				t.Errorf("worker processes ranged %d..%d during the rolling reload, want 4..5 (count 4, surge 1)", low, peak)
			}

			// The third slot's new worker fails: back to 4 old-config ones.
			broken := []string{"sh", "-c", `[ "$BATON_WORKER" = 2 ] && exit 1; exec "$0"`, bin.hello}
			b.write(t, rolling(broken)(b.addr))
			code, out = b.reloadCmd(t)
			if code != 1 || !strings.Contains(out, "rolled back") {
				t.Fatalf("rolling reload to a config broken at slot 3: exit %d: %s", code, out)
			}
			var states []string
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				var pids []int
				pids, states = statusRows(t, b.control)
				if len(pids) == 4 && strings.Join(states, " ") == strings.TrimSpace(strings.Repeat("ready ", 4)) {
					break
				}
			}
			if st := stats(t, b.control); st.Generation != 2 || len(states) != 4 {
				t.Errorf("after the rollback: generation %d serving, workers %v; want generation 2 with 4 ready", st.Generation, states)
			}
			waitServed(t, g, 300)
			r := g.Stop()
			t.Logf("load: %s", r)
			if r.Failed() != 0 {
				t.Errorf("%d requests failed: %s %v", r.Failed(), r, r.Samples)
			}
		})
	}
}
