package integration

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/loadtest"
)

// What a careless operator or a misbehaving worker throws at a running
// baton, with the figures it held when first tried as bounds: signal
// storms, commands racing each other, a worker that sends systemd's
// messages to baton.

// hostileNotifyEnv makes the test binary a worker that first sends baton's
// notify socket what a confused or hostile worker could, from its own pid
// (so baton reads every datagram), then execs the server named by its
// arguments, which becomes ready as usual.
const hostileNotifyEnv = "BATON_IT_HOSTILE_NOTIFY"

// hostileReloading is how many RELOADING=1 a hostile worker sends.
const hostileReloading = 10000

func hostileNotify(argv []string) int {
	path := os.Getenv("NOTIFY_SOCKET")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer unix.Close(fd)
	to := &unix.SockaddrUnix{Name: path}
	send := func(msg string, oob []byte) {
		if err := unix.Sendmsg(fd, []byte(msg), oob, to, 0); err != nil {
			fmt.Fprintf(os.Stderr, "hostile worker: send %.20q: %v\n", msg, err)
		}
	}
	// 250 descriptors with an FDSTORE=1 that baton must not keep.
	null, err := os.Open(os.DevNull)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fds := make([]int, 250)
	for i := range fds {
		fds[i] = int(null.Fd())
	}
	send("FDSTORE=1\nFDNAME=http", unix.UnixRights(fds...))
	send("MAINPID=1", nil)
	send("MAINPID=1\nNOTIFYACCESS=all\nEXTEND_TIMEOUT_USEC=999999999999", nil)
	send("\x00\xff\x9b[2J=garbage\n==\nSTATUS", nil)
	for range hostileReloading {
		send("RELOADING=1", nil)
	}
	null.Close()
	if err := syscall.Exec(argv[0], argv, os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "hostile worker: exec %s: %v\n", argv[0], err)
	}
	return 1
}

// fdsBeside is how many descriptors baton (pid) holds besides the
// sockets listening on addr: with reuseport (auto's choice) it holds one
// per worker alive at once, whose number follows the churn (reloads,
// replacements), not a leak.
func fdsBeside(t *testing.T, pid int, addr string) int {
	t.Helper()
	return openFDs(t, pid) - len(listenerInodes(t, addr))
}

// waitFDs waits until baton holds want descriptors besides the sockets
// listening on addr, and fails naming what it holds if it does not within
// a few seconds (a worker's exit and the end of its output pipes reach
// baton separately).
func waitFDs(t *testing.T, pid int, addr string, want int, what string) {
	t.Helper()
	got := fdsBeside(t, pid, addr)
	for settle := time.Now().Add(5 * time.Second); got != want && time.Now().Before(settle); time.Sleep(20 * time.Millisecond) {
		got = fdsBeside(t, pid, addr)
	}
	if got != want {
		t.Errorf("baton holds %d descriptors besides its %d listening sockets %s, %d before", got, len(listenerInodes(t, addr)), what, want)
	}
}

// Workers that send baton MAINPID=1, an FDSTORE=1 with 250 descriptors,
// 10,000 RELOADING=1 and garbage before they serve: each becomes ready as
// usual, no request fails, baton stays the process it was, keeps none of
// the descriptors, and counts nothing it did not ignore as done.
func TestHostileNotifyDatagrams(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b := startConfigBaton(t, func(addr string) string {
		return batonConfig(addr, 2, []string{self, bin.hello}, `env = { `+hostileNotifyEnv+` = "1" }`)
	})
	pid := b.cmd.Process.Pid
	waitIdle(t, b.out)
	before := fdsBeside(t, pid, b.addr)
	g := startLoad(t, b.addr, loadtest.KeepAlive, 16)
	for round := range 3 {
		for slot := range 2 {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			r, err := control.Ask(ctx, b.control, control.Request{Command: "restart", Slot: &slot})
			cancel()
			if err != nil || !r.OK {
				t.Fatalf("round %d: restart %d: %v %+v", round, slot, err, r)
			}
		}
		waitServed(t, g, 200)
	}
	waitIdle(t, b.out)
	r := g.Stop()
	st := stats(t, b.control)
	t.Logf("8 hostile workers (2, then 3 rounds of 2 restarts): %s; baton pid %d, %d descriptors, %d notify datagrams dropped", r, st.PID, st.FDs, st.NotifyDrops)
	if r.Failed() != 0 {
		t.Errorf("%d requests failed: %s %v", r.Failed(), r, r.Samples)
	}
	if st.PID != pid {
		t.Errorf("baton answers as pid %d, started as %d", st.PID, pid)
	}
	if st.Reloading {
		t.Error("a worker's RELOADING=1 made baton report a reload")
	}
	waitFDs(t, pid, b.addr, before, "after 6 more hostile workers")
}

// 1,000 SIGHUPs as fast as they can be sent, under 32 keep-alive clients:
// they coalesce into a few reloads, no request fails, and baton's
// descriptors are what they were once it is idle again.
func TestSIGHUPStorm(t *testing.T) {
	b := startConfigBaton(t, hellos(2, ""))
	pid := b.cmd.Process.Pid
	waitIdle(t, b.out)
	before := fdsBeside(t, pid, b.addr)
	g := startLoad(t, b.addr, loadtest.KeepAlive, 32)
	from := b.out.len()
	start := time.Now()
	for range 1000 {
		syscall.Kill(pid, syscall.SIGHUP)
	}
	sent := time.Since(start)
	// Baton takes a signal when its loop gets to it: on a loaded machine
	// it may answer the first stats request before, and look idle.
	b.out.waitFrom(from, regexp.MustCompile(`msg=reloading`), 30*time.Second)
	waitIdle(t, b.out)
	waitServed(t, g, 300)
	r := g.Stop()
	st := stats(t, b.control)
	t.Logf("1,000 SIGHUPs sent in %s: generation %d; load: %s", sent.Round(time.Millisecond), st.Generation, r)
	if r.Failed() != 0 {
		t.Errorf("%d requests failed: %s %v", r.Failed(), r, r.Samples)
	}
	if st.Generation < 2 {
		t.Errorf("generation %d after 1,000 SIGHUPs: no reload was done", st.Generation)
	}
	waitFDs(t, pid, b.addr, before, "after 1,000 SIGHUPs")
	if _, err := getOnce(b.addr, "/"); err != nil {
		t.Errorf("not serving after the storm: %v", err)
	}
}

// 50 scales, a restart and a reload sent at once, three times over, under
// load: every command is answered, no request fails, and once baton is
// idle `baton status` lists exactly the workers that are its children,
// all ready.
func TestConcurrentOperatorCommands(t *testing.T) {
	b := startConfigBaton(t, hellos(2, "\n[restart]\nlimit = 1000\n"))
	pid := b.cmd.Process.Pid
	g := startLoad(t, b.addr, loadtest.KeepAlive, 16)
	for round := range 3 {
		reqs := []control.Request{{Command: "reload"}, {Command: "restart", Slot: new(int)}}
		for i := range 50 {
			reqs = append(reqs, control.Request{Command: "scale", Workers: []string{"1", "2", "3", "+1", "-1"}[i%5]})
		}
		resps := make([]control.Response, len(reqs))
		errs := make([]error, len(reqs))
		var wg sync.WaitGroup
		for i, req := range reqs {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				resps[i], errs[i] = control.Ask(ctx, b.control, req)
			})
		}
		wg.Wait()
		// A command that arrives while another changes the pool is
		// refused with its reason; each gets an answer.
		done := 0
		for i, err := range errs {
			switch {
			case err == nil:
				done++
			case resps[i].Error == "":
				t.Errorf("round %d: %s %s: no answer: %v", round, reqs[i].Command, reqs[i].Workers, err)
			}
		}
		waitIdle(t, b.out)
		pids, states := statusRows(t, b.control)
		live := children(pid)
		if !slices.Equal(pids, live) || slices.ContainsFunc(states, func(s string) bool { return s != "ready" }) {
			t.Errorf("round %d: status lists %v %v, baton's children are %v", round, pids, states, live)
		}
		waitServed(t, g, 200)
		t.Logf("round %d: 52 commands at once, %d done, the others refused; then %d workers", round, done, len(pids))
		if done == 0 {
			t.Errorf("round %d: all 52 commands were refused", round)
		}
	}
	r := g.Stop()
	if r.Failed() != 0 {
		t.Errorf("%d requests failed: %s %v", r.Failed(), r, r.Samples)
	}
}

// A round-robin worker SIGSTOPped for 2 s under load (a debugger, a long
// pause), well inside worker.channel_timeout: the other worker takes the
// new connections meanwhile, what waited on the stopped one is served
// once it goes on, and no request fails.
func TestRoundRobinWorkerPaused(t *testing.T) {
	b := startBaton(t, "--workers", "2", "--balance", config.BalanceRoundRobin, "--", bin.hello)
	var gens []*loadtest.Generator
	for _, mode := range modes {
		gens = append(gens, startLoad(t, b.addr, mode, 16))
	}
	paused := b.workerPIDs()[0]
	before := gens[1].Snapshot().OK
	syscall.Kill(paused, syscall.SIGSTOP)
	stopped := time.Now()
	time.Sleep(2 * time.Second) // the pause itself: what is tried is its length
	during := gens[1].Snapshot().OK - before
	syscall.Kill(paused, syscall.SIGCONT)
	t.Logf("worker %d stopped for %s", paused, time.Since(stopped).Round(time.Millisecond))
	for _, g := range gens {
		waitServed(t, g, 300)
	}
	for _, g := range gens {
		r := g.Stop()
		t.Logf("worker %d stopped 2 s: %s", paused, r)
		if r.Failed() != 0 {
			t.Errorf("%d requests failed: %s %v", r.Failed(), r, r.Samples)
		}
	}
	if during == 0 {
		t.Errorf("no new connection was served while worker %d was stopped", paused)
	}
	if got := b.workerPIDs()[0]; got != paused {
		t.Errorf("slot 0 is pid %d, was %d: a 2 s pause replaced the worker", got, paused)
	}
}
