package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/loadtest"
)

// footprintKB bounds baton's resident memory at every moment (issue 25:
// under 10 MB), checked with VmHWM, the most it ever held.
const footprintKB = 10 << 10

// baton's own memory stays under footprintKB in every balancing mode, at
// start (up to all workers ready) and through a burst of connections, one
// per request (baton passes each of them under round-robin). The build is
// the one `make build` ships.
func TestFootprint(t *testing.T) {
	exe := batonStatic(t)
	for _, balance := range []string{config.BalanceShared, config.BalanceReusePort, config.BalanceRoundRobin} {
		t.Run(balance, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			p := start(t, nil, exe, "run", "--listen", "http=tcp://"+addr, "--workers", "2", "--balance", balance,
				"--control", t.TempDir()+"/ctl.sock", "--", bin.hello)
			p.out.wait(reAllReady, 30*time.Second)
			pid := p.cmd.Process.Pid
			atStart := statusKB(t, pid, "VmHWM:")
			if atStart >= footprintKB {
				t.Errorf("baton held %d kB resident by the time its workers were ready, want under %d kB", atStart, footprintKB)
			}
			r, err := loadtest.Run(withTimeout(t, time.Minute), loadtest.Options{Addr: addr, Concurrency: 32, Requests: 3000, Mode: loadtest.PerRequest})
			if err != nil {
				t.Fatal(err)
			}
			if r.Failed() != 0 {
				t.Errorf("%d of %d requests failed: %s", r.Failed(), r.Requests, r)
			}
			peak := statusKB(t, pid, "VmHWM:")
			if peak >= footprintKB {
				t.Errorf("baton held %d kB resident through %d connections, want under %d kB", peak, r.Requests, footprintKB)
			}
			t.Logf("baton's peak resident memory: %d kB at start, %d kB through %d connections", atStart, peak, r.Requests)
		})
	}
}

// statusKB reads a field of /proc/pid/status, in kB.
func statusKB(t testing.TB, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("%s %q: %v", field, v, err)
			}
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
