package integration

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/loadtest"
)

// configBaton runs baton from a config file the test can rewrite, and
// waits until it serves.
type configBaton struct {
	*baton
	cfgPath, control string
}

// batonConfig renders a config for hello workers; extra goes into
// [worker] (e.g. `ready = "delay:100ms"`), command overrides the worker
// command when not nil. reload.timeout is the default, 60s: a server
// (Python's, a race build) may take seconds to start on a loaded machine.
// A test of the timeout sets its own (withReloadTimeout).
func batonConfig(addr string, count int, command []string, extra string) string {
	if command == nil {
		command = []string{bin.hello}
	}
	q := make([]string, len(command))
	for i, c := range command {
		q[i] = strconv.Quote(c)
	}
	return fmt.Sprintf("[[listen]]\nname = \"http\"\naddress = \"tcp://%s\"\n\n[worker]\ncommand = [%s]\ncount = %d\ndrain_timeout = \"10s\"\n%s\n\n[reload]\ntimeout = \"60s\"\n",
		addr, strings.Join(q, ", "), count, extra)
}

// startConfigBaton runs baton from a config file made by cfg for a free
// loopback address, and waits until it serves.
func startConfigBaton(t testing.TB, cfg func(addr string) string) *configBaton {
	t.Helper()
	return startConfigBatonOf(t, bin.baton, cfg)
}

// startConfigBatonOf is startConfigBaton with another build of baton.
func startConfigBatonOf(t testing.TB, exe string, cfg func(addr string) string) *configBaton {
	t.Helper()
	b := newConfigBatonOf(t, exe, cfg)
	b.out.wait(reAllReady, 30*time.Second)
	return b
}

// newConfigBaton starts baton from a config file made by cfg, without
// waiting for anything.
func newConfigBaton(t testing.TB, cfg func(addr string) string) *configBaton {
	t.Helper()
	return newConfigBatonOf(t, bin.baton, cfg)
}

func newConfigBatonOf(t testing.TB, exe string, cfg func(addr string) string) *configBaton {
	t.Helper()
	dir := t.TempDir()
	b := &configBaton{cfgPath: filepath.Join(dir, "baton.toml"), control: filepath.Join(dir, "baton.sock")}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	b.write(t, cfg(addr))
	p := start(t, nil, exe, "run", "--config", b.cfgPath, "--control", b.control)
	b.baton = &baton{proc: p, addr: addr}
	return b
}

// hellos returns a config function for n hello workers with extra TOML
// appended (e.g. a [restart] table).
func hellos(n int, extra string) func(addr string) string {
	return func(addr string) string { return batonConfig(addr, n, nil, "") + extra }
}

// withReloadTimeout sets reload.timeout in a config batonConfig made.
func withReloadTimeout(cfg, timeout string) string {
	return strings.Replace(cfg, `timeout = "60s"`, fmt.Sprintf("timeout = %q", timeout), 1)
}

// write replaces the config atomically (as editors and config management
// do), so a reload never reads half a file.
func (b *configBaton) write(t testing.TB, cfg string) {
	t.Helper()
	tmp := b.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, b.cfgPath); err != nil {
		t.Fatal(err)
	}
}

// reloadCmd runs `baton reload` and returns its exit code and output.
func (b *configBaton) reloadCmd(t testing.TB) (int, string) {
	t.Helper()
	p := start(t, nil, bin.baton, "reload", "--control", b.control, "--timeout", "60s")
	code := p.waitExit(70 * time.Second)
	<-p.out.done
	return code, p.out.String()
}

// 20 SIGHUPs or more, 250 ms apart, until at least 10 reloads are done,
// under 64 clients: not one failed request, in either mode, with 2 and
// with 4 workers. (SIGHUPs during a reload coalesce: on a loaded machine,
// where a reload takes longer, more are sent.) Reloads come here faster
// than a drain may take on a loaded machine (a keep-alive client starved
// of CPU holds its worker's drain until it sends), and past
// reload.max_draining (2) the oldest generation is killed with what it
// holds, as documented: the cap is raised to 10 so that this test is of
// the reloads, not of that cap (TestMaxDraining, in internal/supervisor
// and internal/lifecycle, is).
func TestReloadUnderLoad(t *testing.T) {
	reDone := regexp.MustCompile(`msg="reload done"`)
	for _, workers := range []int{2, 4} {
		for _, mode := range modes {
			t.Run(fmt.Sprintf("%d-workers/%s", workers, mode), func(t *testing.T) {
				b := startConfigBaton(t, func(addr string) string {
					return batonConfig(addr, workers, nil, "") + "max_draining = 10\n"
				})
				g := startLoad(t, b.addr, mode, 64)
				tick := time.NewTicker(250 * time.Millisecond)
				defer tick.Stop()
				deadline := time.Now().Add(2 * time.Minute)
				sent := 0
				for ; sent < 20 || b.out.count(reDone) < 10; sent++ {
					if time.Now().After(deadline) {
						t.Fatalf("only %d reloads were done for %d SIGHUPs 250ms apart", b.out.count(reDone), sent)
					}
					<-tick.C
					syscall.Kill(b.cmd.Process.Pid, syscall.SIGHUP)
				}
				// The last reload is done and its predecessor drained.
				b.out.wait(reDone, 30*time.Second)
				waitIdleAt(t, b.control)
				waitServed(t, g, 500)
				r := g.Stop()
				t.Logf("%d workers, %d SIGHUPs (%d reloads done): %s", workers, sent, b.out.count(reDone), r)
				if r.Failed() != 0 {
					t.Errorf("%d requests failed across reloads: %s %v", r.Failed(), r, r.Samples)
				}
			})
		}
	}
}

// waitIdle waits until baton has no reload running and no generation
// draining, by its control socket's stats.
func waitIdle(t testing.TB, out *logLines) {
	t.Helper()
	m := regexp.MustCompile(`control=(\S+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatal("baton did not log its control socket")
	}
	waitIdleAt(t, m[1])
}

// waitIdleAt is waitIdle for the baton whose control socket is socket.
func waitIdleAt(t testing.TB, socket string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := stats(t, socket)
		if !st.Reloading && st.Draining == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("baton still busy: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stats(t testing.TB, socket string) *control.Stats {
	t.Helper()
	return request(t, socket, "stats").Stats
}

// request sends command to the control socket and returns the answer.
func request(t testing.TB, socket, command string) control.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := control.Ask(ctx, socket, control.Request{Command: command})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A reload that cannot work leaves the old workers serving, without one
// failed request, and `baton reload` says why and exits 1.
func TestReloadFailuresKeepOldWorkers(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(addr string) string
		want string
	}{
		{"invalid config", func(addr string) string {
			return batonConfig(addr, 2, nil, "cuont = 3")
		}, "baton reload: config: "},
		{"duration without unit", func(addr string) string {
			return batonConfig(addr, 2, nil, "watchdog = 5")
		}, `baton.toml:9: worker.watchdog: 5 has no unit: write "5s"`},
		{"worker exits at once", func(addr string) string {
			return batonConfig(addr, 2, []string{"false"}, "")
		}, "reload rolled back: worker "},
		{"worker never ready", func(addr string) string {
			return withReloadTimeout(batonConfig(addr, 2, []string{"sleep", "60"}, ""), "5s")
		}, "did not become ready within 5s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startConfigBaton(t, hellos(2, ""))
			for _, mode := range modes {
				g := startLoad(t, b.addr, mode, 32)
				old := g.Snapshot().PIDs
				b.write(t, tt.cfg(b.addr))
				start := time.Now()
				code, out := b.reloadCmd(t)
				took := time.Since(start)
				waitServed(t, g, 300)
				r := g.Stop()
				t.Logf("%s: baton reload exited %d after %s: %s; load: %s", mode, code, took.Round(time.Millisecond), strings.TrimSpace(out), r)
				if code != 1 || !strings.Contains(out, tt.want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
					t.Errorf("baton reload: exit %d, %q; want exit 1 and one line containing %q", code, out, tt.want)
				}
				if took > 8*time.Second {
					t.Errorf("the rollback took %s, want it at once or at reload.timeout (5s)", took)
				}
				if r.Failed() != 0 {
					t.Errorf("%d requests failed: %s %v", r.Failed(), r, r.Samples)
				}
				for pid := range r.PIDs {
					if _, ok := old[pid]; !ok {
						t.Errorf("pid %s answered; want only the old workers %v", pid, old)
					}
				}
				b.write(t, batonConfig(b.addr, 2, nil, ""))
			}
			if strings.Contains(tt.name, "config") && !strings.Contains(b.out.String(), `baton.toml:9: worker.cuont: unknown key`) {
				t.Errorf("baton's log does not name the bad key and line:\n%s", b.out)
			}
		})
	}
}

// 100 SIGHUPs during a reload, under load: no failure, at most two
// reloads, never overlapping, and the last configuration wins.
func TestReloadStorm(t *testing.T) {
	b := startConfigBaton(t, hellos(2, ""))
	g := startLoad(t, b.addr, loadtest.KeepAlive, 32)
	from := b.out.len()
	// The new workers wait for gate before they start serving, so the
	// first reload lasts until the whole storm has reached baton, however
	// slowly it is sent.
	gate := filepath.Join(t.TempDir(), "gate")
	for i := 1; i <= 100; i++ {
		// The config changes on every tenth signal.
		if i%10 == 0 || i == 1 {
			wait := `while [ ! -e "$1" ]; do sleep 0.01; done; exec "$0"`
			b.write(t, batonConfig(b.addr, 2, []string{"sh", "-c", wait, bin.hello, gate, "rev-" + strconv.Itoa(i)}, ""))
		}
		syscall.Kill(b.cmd.Process.Pid, syscall.SIGHUP)
	}
	b.out.waitFrom(from, regexp.MustCompile(`msg="reload requested while another is under way: queued"`), 30*time.Second)
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, b.out)
	r := g.Stop()
	b.out.mu.Lock()
	lines := append([]string(nil), b.out.lines[from:]...)
	b.out.mu.Unlock()
	reloads, running, lastStarted := 0, false, ""
	for _, l := range lines {
		switch {
		case strings.Contains(l, `msg=reloading`):
			if running {
				t.Errorf("a reload started while another was under way")
			}
			reloads++
			running = true
		case strings.Contains(l, `msg="reload done"`), strings.Contains(l, `msg="reload failed`):
			running = false
		case strings.Contains(l, `msg="starting generation`):
			lastStarted = l
		}
	}
	t.Logf("100 SIGHUPs: %d reloads; load: %s", reloads, r)
	if reloads > 2 {
		t.Errorf("%d reloads for 100 SIGHUPs during one, want at most 2", reloads)
	}
	if !strings.Contains(lastStarted, "rev-100]") {
		t.Errorf("last generation started with %q, want the last config (rev-100)", lastStarted)
	}
	if r.Failed() != 0 {
		t.Errorf("%d requests failed: %s %v", r.Failed(), r, r.Samples)
	}
}

// 300 consecutive reloads: baton's descriptors, goroutines and memory stay
// flat, and no zombie is left. (A build without the race detector, whose
// shadow memory grows by itself some 10% over these reloads and would
// hide baton's own.) Memory is the anonymous part of the resident set:
// the executable's pages, which each trim drops, fault back in with
// whatever code runs before the reading: RSS went up and down by 1.7 MB
// (20%) from one reading to the next, with no trend.
func TestReloadsDoNotLeak(t *testing.T) {
	b := startConfigBatonOf(t, batonPlain(t), hellos(2, ""))
	reload := func(n int) {
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := control.Ask(ctx, b.control, control.Request{Command: "reload"})
			cancel()
			if err != nil {
				t.Fatalf("reload %d: %v", i, err)
			}
		}
		waitIdle(t, b.out)
	}
	// Read once baton has given back what the burst of reloads left
	// resident: it does within a tick of the loop's last work, the end of
	// the last drain. (That tick may have passed by the time the test sees
	// baton idle, and with no work after it no other comes.)
	reDrainedAt := regexp.MustCompile(`(?m)^time=(\S+) .*msg="generation \d+ drained"`)
	settled := func() (*control.Stats, int) {
		m := reDrainedAt.FindAllStringSubmatch(b.out.String(), -1)
		if m == nil {
			t.Fatal("baton logged no drained generation")
		}
		drained, err := time.Parse(time.RFC3339Nano, m[len(m)-1][1])
		if err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			// The log's time is cut to the millisecond.
			if st := stats(t, b.control); !st.Trimmed.Before(drained) {
				return st, statusKB(t, b.cmd.Process.Pid, "RssAnon:")
			}
			if time.Now().After(deadline) {
				t.Fatalf("baton did not trim its memory within 10s of its last drain (%s)", drained)
			}
		}
	}
	reload(100) // warm up
	before, anonBefore := settled()
	kindsBefore, socketsBefore := fdKinds(b.cmd.Process.Pid), len(listenerInodes(t, b.addr))
	reload(300)
	after, anonAfter := settled()
	kindsAfter, socketsAfter := fdKinds(b.cmd.Process.Pid), len(listenerInodes(t, b.addr))
	t.Logf("after 100 reloads: anonymous %d kB, %d listening sockets, %+v", anonBefore, socketsBefore, before)
	t.Logf("after 400 reloads: anonymous %d kB, %d listening sockets, %+v", anonAfter, socketsAfter, after)
	// With reuseport (auto's choice here) baton holds a listening socket
	// per worker alive at once, and keeps a free one for the next worker
	// (docs/balancing.md): their number is the most workers ever alive
	// at once, which grows whenever reloads come faster than the old
	// generations drain, on a loaded machine after the warm-up too. That
	// is not a leak; every other descriptor stays as it was.
	if after.FDs-socketsAfter != before.FDs-socketsBefore {
		t.Errorf("fds %d → %d over 300 reloads, of which listening sockets %d → %d; by kind: %s", before.FDs, after.FDs,
			socketsBefore, socketsAfter, kindsChanged(kindsBefore, kindsAfter))
	}
	// 2 workers × (the serving generation, the new one and 2 draining) are
	// alive at once, and a generation killed for a third draining may
	// not be reaped yet: a socket leaked per reload would be hundreds.
	if socketsAfter > 16 {
		t.Errorf("%d listening sockets after 400 reloads of 2 workers, want at most 16", socketsAfter)
	}
	if after.Goroutines > before.Goroutines+before.Goroutines/10 {
		t.Errorf("goroutines %d → %d over 300 reloads", before.Goroutines, after.Goroutines)
	}
	if after.NotifyDrops != 0 {
		t.Errorf("%d notify messages dropped: workers' messages were taken for strangers'", after.NotifyDrops)
	}
	if anonBefore == 0 || anonAfter > anonBefore+anonBefore/10 {
		t.Errorf("anonymous memory %d kB → %d kB over 300 reloads (more than 10%%)", anonBefore, anonAfter)
	}
	for _, pid := range b.descendants() {
		if procState(pid) == "Z" {
			t.Errorf("zombie %d (%s) under baton", pid, comm(pid))
		}
	}
}

// fdKinds counts pid's descriptors by what they refer to: a path, a
// pipe, an anon_inode ([pidfd], [eventpoll], ...), a unix socket by its
// path, a TCP one by its state.
func fdKinds(pid int) map[string]int {
	sockets := map[string]string{}
	if data, err := os.ReadFile("/proc/net/unix"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			// Num RefCount Protocol Flags Type St Inode [Path]
			if f := strings.Fields(line); len(f) >= 7 {
				sockets[f[6]] = strings.TrimSpace("unix socket " + strings.Join(f[7:], " "))
			}
		}
	}
	for _, tcp := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if data, err := os.ReadFile(tcp); err == nil {
			for line := range strings.SplitSeq(string(data), "\n") {
				// sl local_address rem_address st ... inode
				if f := strings.Fields(line); len(f) >= 10 && f[3] == "0A" {
					sockets[f[9]] = "listening TCP socket"
				} else if len(f) >= 10 {
					sockets[f[9]] = "TCP socket"
				}
			}
		}
	}
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, _ := os.ReadDir(dir)
	kinds := map[string]int{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if strings.HasPrefix(target, "pipe:") {
			target = "pipe"
		} else if inode, ok := strings.CutPrefix(target, "socket:["); ok {
			target = "socket"
			if kind, ok := sockets[strings.TrimSuffix(inode, "]")]; ok {
				target = kind
			}
		}
		kinds[target]++
	}
	return kinds
}

// kindsChanged says which kinds of descriptors fdKinds counted more or
// fewer of in after than in before.
func kindsChanged(before, after map[string]int) string {
	kinds := maps.Clone(before)
	maps.Copy(kinds, after)
	var out []string
	for kind := range kinds {
		if after[kind] != before[kind] {
			out = append(out, fmt.Sprintf("%s %d → %d", kind, before[kind], after[kind]))
		}
	}
	if out == nil {
		return "none"
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}
