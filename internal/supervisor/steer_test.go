package supervisor

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/deal"
	"github.com/batonhq/baton/internal/lifecycle"
)

// steerRig is a supervisor with one reuseport listener on 127.0.0.1, and
// processes standing in for its workers (sleep, which SIGTERM ends).
type steerRig struct {
	s    *supervisor
	l    *listener
	port int
	log  *syncBuffer
	// foreign are the sockets another process would have in the group.
	foreign []int
}

func newSteerRig(t *testing.T) *steerRig {
	t.Helper()
	fd, port := reusePortSocket(t, true)
	var log syncBuffer
	s := &supervisor{
		balance:     config.BalanceReusePort,
		log:         slog.New(slog.NewTextHandler(&log, nil)),
		events:      make(chan any, 64),
		quit:        make(chan struct{}),
		leaving:     map[int]bool{},
		pendingKill: map[int]*pendingSignal{},
	}
	l := &listener{name: "http", fd: fd, inherited: true, group: newGroup("http", fd, true)}
	s.listeners = []*listener{l}
	t.Cleanup(func() {
		close(s.quit)
		for pid := range s.pendingKill {
			s.forget(pid)
		}
		l.close(false)
	})
	return &steerRig{s: s, l: l, port: port, log: &log}
}

// eachProgram runs test with the dealer and with the classic program.
func eachProgram(t *testing.T, test func(t *testing.T)) {
	for _, dealt := range []bool{true, false} {
		t.Run(map[bool]string{true: "dealt", false: "random"}[dealt], func(t *testing.T) {
			dealInTurn = dealt
			t.Cleanup(func() { dealInTurn = true })
			test(t)
		})
	}
}

// worker starts a stand-in worker of slot and gives it a socket, as
// Start does; it returns the process and its socket.
func (r *steerRig) worker(t *testing.T, slot int) (*exec.Cmd, *groupSocket) {
	t.Helper()
	return r.replacement(t, slot, 0)
}

// replacement is worker for one started to replace the worker replaces
// while that one runs.
func (r *steerRig) replacement(t *testing.T, slot, replaces int) (*exec.Cmd, *groupSocket) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	picks, err := r.s.pick(lifecycle.Spawn{Slot: slot, Config: testConfig("serve", 2, nil), Replaces: replaces})
	if err != nil {
		t.Fatal(err)
	}
	r.s.hold(picks, cmd.Process.Pid, slot)
	return cmd, picks[r.l]
}

// The replacement of a worker that holds the listener itself, started
// while that one runs (it said STOPPING=1, or hung), shares the listener:
// baton never closes it, so a connection that waited there for a worker
// that no longer accepts is the replacement's to take. The replacement of
// a worker on another socket gets one of its own: that socket is closed
// once its worker has gone, and its queue moves to the others.
func TestReplacementTakesTheListener(t *testing.T) {
	eachProgram(t, func(t *testing.T) {
		r := newSteerRig(t)
		a, ga := r.worker(t, 0)
		b, gb := r.worker(t, 1)
		if ga != r.l.group.socks[0] || gb == ga {
			t.Fatalf("the first two workers got sockets %d and %d, want the listener and another", slices.Index(r.l.group.socks, ga), slices.Index(r.l.group.socks, gb))
		}
		if _, got := r.replacement(t, 0, a.Process.Pid); got != ga {
			t.Errorf("the replacement of the listener's worker got socket %d, want the listener", slices.Index(r.l.group.socks, got))
		}
		if _, got := r.replacement(t, 1, b.Process.Pid); got == gb || got == ga {
			t.Errorf("the replacement of worker 1 got socket %d, want one of its own", slices.Index(r.l.group.socks, got))
		}
	})
}

// route tells the rig which workers are ready, as the Machine would.
func (r *steerRig) route(ready ...*exec.Cmd) {
	var pids []int
	for _, c := range ready {
		pids = append(pids, c.Process.Pid)
	}
	r.s.Route(lifecycle.Routes{Ready: pids, Slots: []int{0, 1}})
}

// dial opens n connections to the listener's port, closed at the test's
// end, and waits until the kernel has queued them all.
func (r *steerRig) dial(t *testing.T, n int) {
	t.Helper()
	was := r.queued()
	for range n {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	for deadline := time.Now().Add(5 * time.Second); r.queued() < was+n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections queued, want %d", r.queued(), was+n)
		}
	}
}

// queued is the number of connections waiting in all the group's
// queues, and the foreign sockets'.
func (r *steerRig) queued() int {
	n := 0
	for _, gs := range r.l.group.socks {
		n += int(backlog(gs.fd))
	}
	for _, fd := range r.foreign {
		n += int(backlog(fd))
	}
	return n
}

// unserved is the number of connections waiting in the sockets no worker
// holds: baton's free ones, and the foreign ones.
func (r *steerRig) unserved() int {
	n := 0
	for _, gs := range r.l.group.socks {
		if !gs.held() {
			n += int(backlog(gs.fd))
		}
	}
	for _, fd := range r.foreign {
		n += int(backlog(fd))
	}
	return n
}

// intrude binds a socket to the rig's port with SO_REUSEPORT, as another
// process of the same user would, and returns what closes it.
func (r *steerRig) intrude(t *testing.T) (leave func()) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: r.port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		t.Fatal(err)
	}
	r.foreign = append(r.foreign, fd)
	leave = func() {
		if i := slices.Index(r.foreign, fd); i >= 0 {
			r.foreign = slices.Delete(r.foreign, i, i+1)
			unix.Close(fd)
		}
	}
	t.Cleanup(leave)
	return leave
}

// generation starts stand-in workers of slots 0 and 1, and returns them
// and their sockets.
func (r *steerRig) generation(t *testing.T) ([]*exec.Cmd, []*groupSocket) {
	t.Helper()
	a, sa := r.worker(t, 0)
	b, sb := r.worker(t, 1)
	return []*exec.Cmd{a, b}, []*groupSocket{sa, sb}
}

// reloaded starts a generation, then a reload's, and ends the first: its
// sockets are free. It returns the second and its sockets.
func (r *steerRig) reloaded(t *testing.T) ([]*exec.Cmd, []*groupSocket) {
	t.Helper()
	old, _ := r.generation(t)
	r.route(old...)
	ws, socks := r.generation(t)
	r.route(ws...)
	r.exit(old...)
	return ws, socks
}

// served dials n connections and checks that every one reached a socket
// a worker holds, and under the dealer an equal share each of socks.
func (r *steerRig) served(t *testing.T, n int, socks ...*groupSocket) {
	t.Helper()
	was := map[*groupSocket]uint32{}
	for _, gs := range socks {
		was[gs] = backlog(gs.fd)
	}
	unserved := r.unserved()
	r.dial(t, n)
	if got := r.unserved() - unserved; got != 0 {
		t.Errorf("%d of %d connections went to a socket no worker holds", got, n)
	}
	if r.l.group.deal == nil {
		return
	}
	if len(was) != len(socks) {
		t.Fatalf("the workers share sockets: %v", socks)
	}
	for i, gs := range socks {
		if got := backlog(gs.fd) - was[gs]; got != uint32(n/len(socks)) {
			t.Errorf("worker %d's socket got %d of %d: not dealt in turn to %d sockets", i, got, n, len(socks))
		}
	}
}

// exit ends the stand-in workers and tells the rig, as the reaper would.
func (r *steerRig) exit(ws ...*exec.Cmd) {
	for _, w := range ws {
		w.Process.Kill()
		w.Wait()
		r.s.workerExited(w.Process.Pid)
	}
}

// loop runs the loop's calls until a worker's status arrives, and
// checks SIGTERM ended it.
func (r *steerRig) loop(t *testing.T, status <-chan syscall.WaitStatus) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-r.s.events:
			ev.(loopCall).do()
		case ws := <-status:
			if ws.Signal() != syscall.SIGTERM {
				t.Errorf("the worker ended by %v, want SIGTERM", ws.Signal())
			}
			return
		case <-timeout:
			t.Fatal("the worker was never signalled")
		}
	}
}

// exited returns a channel that gets cmd's status once it has exited.
func exited(cmd *exec.Cmd) <-chan syscall.WaitStatus {
	done := make(chan syscall.WaitStatus, 1)
	go func() {
		st, err := cmd.Process.Wait()
		if err != nil {
			panic(err)
		}
		done <- st.Sys().(syscall.WaitStatus)
	}()
	return done
}

// accept takes n connections from gs's queue, as its worker would.
func accept(t *testing.T, gs *groupSocket, n int) {
	t.Helper()
	for range n {
		nfd, _, err := unix.Accept(gs.fd)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(nfd)
	}
}

// A worker told to stop is first left out of the program, and signalled
// only once it has accepted what waited in its socket's queue; new
// connections go to the other worker's socket meanwhile.
func TestSignalWaitsForTheQueue(t *testing.T) {
	eachProgram(t, func(t *testing.T) {
		r := newSteerRig(t)
		a, sa := r.worker(t, 0)
		b, sb := r.worker(t, 1)
		if sa == sb || len(r.l.group.socks) != 2 {
			t.Fatalf("two workers got %d sockets, want one each", len(r.l.group.socks))
		}
		r.route(a) // everything goes to a's socket
		r.dial(t, 3)
		if n := backlog(sa.fd); n != 3 {
			t.Fatalf("a's queue holds %d, want 3", n)
		}
		r.route(a, b)
		status := exited(a)
		r.s.Signal(a.Process.Pid, lifecycle.SIGTERM, lifecycle.Process)
		if _, waiting := r.s.pendingKill[a.Process.Pid]; !waiting {
			t.Fatal("a was signalled with connections waiting in its socket")
		}
		r.dial(t, 5)
		if na, nb := backlog(sa.fd), backlog(sb.fd); na != 3 || nb != 5 {
			t.Fatalf("queues a %d, b %d after a was left out; want 3 and 5", na, nb)
		}
		accept(t, sa, 3)
		r.loop(t, status)
	})
}

// With the dealer, new connections go to the ready workers' sockets in
// turn, exactly: 64 over 4 workers is 16 each, and a worker left out
// (leaving, or not ready) gets none.
func TestDealsInTurn(t *testing.T) {
	r := newSteerRig(t)
	if r.l.group.deal == nil {
		t.Fatalf("no dealer: %s", r.l.group.random)
	}
	var ws []*exec.Cmd
	var socks []*groupSocket
	for slot := range 5 {
		w, gs := r.worker(t, slot)
		ws, socks = append(ws, w), append(socks, gs)
	}
	r.route(ws[:4]...)
	r.dial(t, 64)
	for i, gs := range socks {
		if want := map[bool]uint32{true: 16, false: 0}[i < 4]; backlog(gs.fd) != want {
			t.Errorf("worker %d's queue holds %d of 64, want %d", i, backlog(gs.fd), want)
		}
	}
}

// A socket from systemd may still be in the maps of the program a baton
// that exited attached: the next baton's dealer takes it once that
// program is detached, and not before.
func TestDealerAfterARestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the dealer needs CAP_BPF: run as root")
	}
	fd, _ := reusePortSocket(t, true)
	defer unix.Close(fd)
	before, err := deal.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := before.Add(fd); err != nil {
		t.Fatal(err)
	}
	if err := before.Attach(fd); err != nil {
		t.Fatal(err)
	}
	before.Close() // it exited; its program stays attached
	if g := newGroup("http", fd, false); g.deal != nil || !strings.Contains(g.random, "busy") {
		t.Fatalf("a dealer took a socket another program's map holds (random %q)", g.random)
	}
	g := newGroup("http", fd, true)
	if g.deal == nil {
		t.Fatalf("no dealer after the old program was detached: %s", g.random)
	}
	g.deal.Close()
}

// A worker that accepts nothing is signalled anyway, steerWait later;
// SIGKILL never waits.
func TestSignalWaitIsBounded(t *testing.T) {
	eachProgram(t, func(t *testing.T) {
		r := newSteerRig(t)
		a, sa := r.worker(t, 0)
		b, _ := r.worker(t, 1)
		r.route(a)
		r.dial(t, 2)
		r.route(a, b)
		status := exited(a)
		r.s.Signal(a.Process.Pid, lifecycle.SIGTERM, lifecycle.Process)
		r.loop(t, status)
		if n := backlog(sa.fd); n != 2 {
			t.Errorf("a's queue holds %d, want the 2 it never accepted", n)
		}

		c, _ := r.worker(t, 0)
		r.route(b, c)
		status = exited(b)
		r.s.Signal(b.Process.Pid, lifecycle.SIGKILL, lifecycle.Process)
		select {
		case ws := <-status:
			if ws.Signal() != syscall.SIGKILL {
				t.Errorf("b ended by %v, want SIGKILL", ws.Signal())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("SIGKILL did not reach b")
		}
	})
}

// A socket no worker will take again, with connections waiting (its
// worker died, and its slot is gone), is taken out of the group, and so
// is every free one (the kernel moves the queue by its hash to any socket
// still listening). The kernel moves the group's last socket into each
// leaving one's place, and the program follows: new connections reach
// the ready workers.
func TestRetireKeepsTheKernelsOrder(t *testing.T) {
	eachProgram(t, func(t *testing.T) {
		r := newSteerRig(t)
		a, sa := r.worker(t, 0)
		b, sb := r.worker(t, 1)
		c, _ := r.worker(t, 2)
		d, sd := r.worker(t, 3)
		all := []int{0, 1, 2, 3}
		r.s.Route(lifecycle.Routes{Ready: []int{b.Process.Pid}, Slots: all})
		r.dial(t, 2) // b's, and b dies
		r.s.workerExited(b.Process.Pid)
		r.s.workerExited(c.Process.Pid)
		if len(r.l.group.socks) != 4 || backlog(sb.fd) != 2 {
			t.Fatalf("%d sockets, b's holding %d: a socket whose slot is refilled stays, with its queue", len(r.l.group.socks), backlog(sb.fd))
		}
		r.s.Route(lifecycle.Routes{Ready: []int{a.Process.Pid, d.Process.Pid}, Slots: []int{0, 3}})
		if got, want := r.l.group.socks, []*groupSocket{sa, sd}; !slices.Equal(got, want) {
			t.Fatalf("after b's and c's sockets were retired the group is %v, want a's and d's (d's moved into c's place, then b's)", got)
		}
		if n, err := listenersAt(sa.fd); err != nil || n != 2 {
			t.Fatalf("%d sockets listen (%v), want 2", n, err)
		}
		if r.l.group.to == nil || !slices.Equal(r.l.group.to, []int{0, 1}) {
			t.Errorf("the program picks from %v, want a's and d's indices [0 1]", r.l.group.to)
		}
		was := backlog(sa.fd) + backlog(sd.fd) // b's 2 moved here, with tcp_migrate_req = 1
		r.dial(t, 10)
		if got := backlog(sa.fd) + backlog(sd.fd) - was; got != 10 {
			t.Errorf("of 10 new connections %d reached the ready workers", got)
		}
	})
}

// judge tells another process's sockets from baton's that left the
// kernel's group.
func TestJudge(t *testing.T) {
	tests := []struct {
		n         int
		listening []bool
		want      census
	}{
		{2, []bool{true, true}, census{}},
		{3, []bool{true, true}, census{foreign: 1}},
		{1, []bool{true, false}, census{shut: []int{1}}},
		{2, []bool{false, true, false}, census{foreign: 1, shut: []int{2, 0}}},
		{0, []bool{true}, census{}}, // counted as one stopped listening
	}
	for _, tt := range tests {
		if got := judge(tt.n, tt.listening); got.foreign != tt.want.foreign || !slices.Equal(got.shut, tt.want.shut) {
			t.Errorf("judge(%d, %v) = %+v, want %+v", tt.n, tt.listening, got, tt.want)
		}
	}
}

// A socket of another process of the same user in the group gets
// nothing from baton's program: steering goes on, baton says so, and
// under the classic program, whose indices a socket bound after it would
// not have, workers share rather than bind.
func TestForeignSocketGetsNothing(t *testing.T) {
	eachProgram(t, func(t *testing.T) {
		r := newSteerRig(t)
		r.intrude(t)
		a, sa := r.worker(t, 0)
		b, sb := r.worker(t, 1)
		g := r.l.group
		if g.off || g.foreign != 1 || !strings.Contains(r.log.String(), "another process listens on the address") {
			t.Fatalf("off %v, %d foreign sockets seen; log:\n%s", g.off, g.foreign, r.log)
		}
		if dealt := g.deal != nil; dealt == (sa == sb) || len(g.socks) != map[bool]int{true: 2, false: 1}[dealt] {
			t.Fatalf("%d sockets for 2 workers (dealt %v)", len(g.socks), dealt)
		}
		r.route(a, b)
		r.dial(t, 20)
		if n := r.unserved(); n != 0 {
			t.Errorf("%d of 20 connections went to a socket no worker holds", n)
		}
		if n, err := listenersAt(g.socks[0].fd); err != nil || n != len(g.socks)+1 {
			t.Errorf("%d sockets listen (%v), want baton's %d and the other one", n, err, len(g.socks))
		}
	})
}

// A baton started by a self-upgrade leaves the program alone until it is
// in charge: if the upgrade fails, nothing was sent to its workers.
func TestSuccessorSteersOnceInCharge(t *testing.T) {
	eachProgram(t, func(t *testing.T) {
		r := newSteerRig(t)
		r.s.parent = 1 // a parent still in charge
		a, _ := r.worker(t, 0)
		r.s.Route(lifecycle.Routes{Ready: []int{a.Process.Pid}, Slots: []int{0}, Shared: true})
		if r.l.group.to != nil {
			t.Fatalf("a successor not in charge attached a program picking from %v", r.l.group.to)
		}
		r.s.parent = 0 // TakeOver
		r.s.Route(lifecycle.Routes{Ready: []int{a.Process.Pid}, Slots: []int{0}})
		if !slices.Equal(r.l.group.to, []int{0}) {
			t.Fatalf("in charge, the program picks from %v, want [0]", r.l.group.to)
		}
	})
}

// A socket that joins the group after baton bound its own is noticed at
// the next change of routes, and steering goes on.
func TestForeignSocketLater(t *testing.T) {
	r := newSteerRig(t)
	a, _ := r.worker(t, 0)
	b, _ := r.worker(t, 1)
	r.route(a, b)
	r.intrude(t)
	r.route(a)
	if g := r.l.group; g.off || g.foreign != 1 || !slices.Equal(g.to, []int{0}) {
		t.Fatalf("off %v, %d foreign sockets seen, the program picks from %v; want a's [0]", g.off, g.foreign, g.to)
	}
}

// A process of the same user that binds the port with SO_REUSEPORT while
// a reload runs leaves no socket of the group without a worker: while it
// is there and after it has gone, every new connection reaches a socket
// a worker holds, and the dealer deals them to the new workers in turn.
func TestIntruderDuringReload(t *testing.T) {
	eachProgram(t, func(t *testing.T) {
		r := newSteerRig(t)
		old, _ := r.generation(t)
		r.route(old...)
		leave := r.intrude(t)
		ws, socks := r.generation(t) // a reload's
		r.route(append(old, ws...)...)
		r.route(ws...)
		r.exit(old...)
		r.served(t, 20)
		leave()
		r.route(ws...)
		r.served(t, 20, socks...)
	})
}

// Once another process's sockets have gone, the timer that looks again
// finds the group baton's alone and attaches its program again, in case
// the other one detached or replaced it: new connections reach the
// workers, in turn under the dealer.
func TestSteersAgainWhenTheIntruderLeaves(t *testing.T) {
	eachProgram(t, func(t *testing.T) {
		r := newSteerRig(t)
		ws, socks := r.reloaded(t)
		leave := r.intrude(t)
		r.route(ws...)
		unix.SetsockoptInt(r.foreign[0], unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
		leave()
		from := len(r.log.String())
		for timeout := time.After(5 * time.Second); !strings.Contains(r.log.String()[from:], "baton's alone again"); {
			select {
			case ev := <-r.s.events:
				ev.(loopCall).do()
			case <-timeout:
				t.Fatalf("the group was not checked again after the other process left; log:\n%s", r.log)
			}
		}
		r.served(t, 20, socks...)
	})
}

// A worker that shuts its socket down takes it out of the kernel's group.
// The dealer goes on without it; the classic program, whose order that
// changed, stops, and the next worker takes the listener, which no
// worker held: no socket that listens is left without a worker.
func TestWorkerShutsItsSocket(t *testing.T) {
	eachProgram(t, func(t *testing.T) {
		r := newSteerRig(t)
		ws, socks := r.reloaded(t) // the listener and slot 1's old socket are free
		unix.Shutdown(socks[1].fd, unix.SHUT_RD)
		r.route(ws...)
		g := r.l.group
		if dealt := g.deal != nil; g.off == dealt || slices.Contains(g.socks, socks[1]) != !dealt {
			t.Fatalf("off %v, the shut socket in the group %v (dealt %v); log:\n%s", g.off, slices.Contains(g.socks, socks[1]), dealt, r.log)
		}
		e, se := r.worker(t, 1) // the replacement of the worker that shut it
		r.exit(ws[1])
		r.route(ws[0], e)
		r.served(t, 20, socks[0], se)
	})
}
