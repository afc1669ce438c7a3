package integration

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/loadtest"
)

var modes = []loadtest.Mode{loadtest.KeepAlive, loadtest.PerRequest}

// startLoad starts load on addr and waits until it flows.
func startLoad(t testing.TB, addr string, mode loadtest.Mode, c int) *loadtest.Generator {
	t.Helper()
	// It runs until the test stops it (Cleanup at the latest): a test of
	// slow servers on a loaded machine may need it for minutes.
	ctx := withTimeout(t, 10*time.Minute)
	g, err := loadtest.Start(ctx, loadtest.Options{Addr: addr, Concurrency: c, Mode: mode, Nice: loadNice})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Stop() })
	if err := g.WaitOK(ctx, 200); err != nil {
		t.Fatalf("load never flowed: %v (%s)", err, g.Snapshot())
	}
	return g
}

// loadNice is the nice value of startLoad's clients: they take the CPU
// that baton and its workers leave, as clients on other machines would.
// A load that takes its share of both cores slows the start of every
// new worker several times over, and with it every reload a test waits
// for (TestRealServers' rows took 2.5 times as long). The clients never
// pause: every reload still meets requests in flight.
const loadNice = 10

// waitServed waits until the load has seen n more OK responses than now,
// so assertions cover a stretch of service after an event.
func waitServed(t testing.TB, g *loadtest.Generator, n int64) {
	t.Helper()
	if err := g.WaitOK(withTimeout(t, 30*time.Second), g.Snapshot().OK+n); err != nil {
		t.Fatalf("load stalled: %v (%s)", err, g.Snapshot())
	}
}

// A worker told to stop drains while its replacement starts: no request
// fails, in either mode.
func TestWorkerSIGTERMUnderLoad(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			b := startBaton(t, "--workers", "2", "--", bin.hello)
			initial := b.workerPIDs()
			g := startLoad(t, b.addr, mode, 32)
			from := b.out.len()
			for round := 0; round < 3; round++ {
				victim := b.workerPIDs()[round%2]
				if err := syscall.Kill(victim, syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				// The replacement becomes ready and the old worker exits,
				// in either order: a worker that drains in a few
				// milliseconds may be gone before its replacement is ready.
				_, ready := b.out.waitFrom(from, regexp.MustCompile(fmt.Sprintf(`msg="worker ready" slot=%d `, round%2)), 20*time.Second)
				_, exited := b.out.waitFrom(from, regexp.MustCompile(`msg="worker exited" slot=\d+ pid=`+strconv.Itoa(victim)+` `), 40*time.Second)
				from = max(ready, exited)
				waitServed(t, g, 500)
			}
			r := g.Stop()
			t.Logf("%s", r)
			if r.Failed() != 0 {
				t.Errorf("%d requests failed across 3 worker drains: %s %v", r.Failed(), r, r.Samples)
			}
			// Keep-alive clients stay on the worker they reached first, so
			// not every replacement gets one; but both first workers left,
			// so replacements must have answered.
			replaced := false
			for pid := range r.PIDs {
				n, _ := strconv.Atoi(pid)
				replaced = replaced || (n != initial[0] && n != initial[1])
			}
			if !replaced {
				t.Errorf("answers came only from the first workers %v: %v", initial, r.PIDs)
			}
		})
	}
}

// A worker killed outright loses its in-flight requests, but no connection
// is ever refused: the socket belongs to baton, not to the worker.
func TestWorkerSIGKILLNoRefused(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			b := startBaton(t, "--workers", "2", "--", bin.hello)
			g := startLoad(t, b.addr, mode, 32)
			from := b.out.len()
			for round := 0; round < 3; round++ {
				victim := b.workerPIDs()[round%2]
				if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				_, from = b.out.waitFrom(from, regexp.MustCompile(fmt.Sprintf(`msg="worker ready" slot=%d `, round%2)), 20*time.Second)
				waitServed(t, g, 500)
			}
			r := g.Stop()
			t.Logf("%s (failures are requests in flight on the killed workers)", r)
			if r.Refused != 0 {
				t.Errorf("%d connections refused: %s", r.Refused, r)
			}
			if r.Failed() > 3*32 {
				t.Errorf("%d failures from 3 kills with 32 clients: more than the in-flight requests", r.Failed())
			}
		})
	}
}

// Descriptors baton inherited without close-on-exec (from the shell that
// started it) do not reach the workers: they get their listeners at 3..
// and stdio, as under systemd.
func TestWorkersGetNoStrayDescriptors(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	stray, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", r.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// At 3, 4 and 5 in baton: the listener lands on 3 in a worker, and
	// 4 and 5 would be left there.
	p, read := startFiles(t, []*os.File{r, r, r}, nil, bin.baton, "run", "--listen", "http=tcp://"+addr, "--workers", "2", "--", bin.hello)
	read()
	p.out.wait(reAllReady, 30*time.Second)
	b := &baton{proc: p, addr: addr}
	for _, pid := range b.workerPIDs() {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); link == stray {
				t.Errorf("worker %d has baton's inherited %s at descriptor %s", pid, stray, e.Name())
			}
		}
	}
}
