package steer

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/batonhq/baton/internal/lifecycle"
)

// fakeKernel is an Env that opens no socket: it keeps a SO_REUSEPORT
// group in the kernel's order (a socket joins at the end; one that leaves
// is replaced by the last), the connections waiting in each socket's
// queue, and the program attached to the group, and it sends each new
// connection where that program would.
type fakeKernel struct {
	order   []int // the sockets listening on the address, in the kernel's order
	queued  map[int]int
	foreign map[int]bool // sockets of another process
	nextFD  int
	dealers []*fakeDealer
	// random are the indices the attached classic program picks from;
	// dealer is the attached eBPF program; neither: the kernel's hash.
	random []int
	dealer *fakeDealer
	dialed int
	// recheck: RecheckLater was called and the shell's timer is armed.
	recheck    bool
	migrateOff bool
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{queued: map[int]int{}, foreign: map[int]bool{}, nextFD: 10}
}

// listen makes a new socket listen at the address: it joins the group.
func (k *fakeKernel) listen() int {
	fd := k.nextFD
	k.nextFD++
	k.order = append(k.order, fd)
	return fd
}

// leave takes fd out of the group, as the kernel does when a socket stops
// listening, and out of every dealer's map.
func (k *fakeKernel) leave(fd int) {
	if i := slices.Index(k.order, fd); i >= 0 {
		last := len(k.order) - 1
		k.order[i] = k.order[last]
		k.order = k.order[:last]
	}
	for _, d := range k.dealers {
		for key, s := range d.socks {
			if s == fd {
				delete(d.socks, key)
			}
		}
	}
}

// route returns the socket the next connection goes to.
func (k *fakeKernel) route() int {
	n := k.dialed
	k.dialed++
	if d := k.dealer; d != nil && len(d.turns) > 0 {
		key := d.turns[d.next%len(d.turns)]
		d.next++
		if fd, ok := d.socks[key]; ok {
			return fd
		}
	} else if len(k.random) > 0 {
		// A stand-in for the classic program's random pick that
		// reaches every socket it may pick.
		if i := k.random[n%len(k.random)]; i < len(k.order) {
			return k.order[i]
		}
	}
	return k.order[n%len(k.order)]
}

// dial queues n new connections where the group's program sends them.
func (k *fakeKernel) dial(n int) {
	for range n {
		k.queued[k.route()]++
	}
}

func (k *fakeKernel) newDealer() *fakeDealer {
	d := &fakeDealer{k: k, socks: map[uint32]int{}}
	k.dealers = append(k.dealers, d)
	return d
}

func (k *fakeKernel) Queued(fd int) uint32         { return uint32(k.queued[fd]) }
func (k *fakeKernel) Bind(beside int) (int, error) { return k.listen(), nil }

func (k *fakeKernel) Census(fds []int) (int, []bool, error) {
	listening := make([]bool, len(fds))
	for i, fd := range fds {
		listening[i] = slices.Contains(k.order, fd)
	}
	return len(k.order), listening, nil
}

func (k *fakeKernel) AttachRandom(fd int, to []int) error {
	k.random, k.dealer = slices.Clone(to), nil
	return nil
}

func (k *fakeKernel) Detach(fd int) { k.random, k.dealer = nil, nil }

// Close takes fd out of the group; what waited in its queue moves to the
// sockets still listening, as the dealer or the kernel's hash sends it.
func (k *fakeKernel) Close(fd int) {
	k.leave(fd)
	n := k.queued[fd]
	delete(k.queued, fd)
	random := k.random
	k.random = nil
	k.dial(n)
	k.random = random
}

func (k *fakeKernel) MigrateOff() bool { return k.migrateOff }
func (k *fakeKernel) RecheckLater()    { k.recheck = true }

// fakeDealer is a Dealer of the fake kernel.
type fakeDealer struct {
	k     *fakeKernel
	socks map[uint32]int // key: socket
	turns []uint32
	next  int
}

func (d *fakeDealer) Add(fd int) (uint32, error) {
	key := uint32(0)
	for ; ; key++ {
		if _, taken := d.socks[key]; !taken {
			break
		}
	}
	d.socks[key] = fd
	return key, nil
}

func (d *fakeDealer) Deal(keys []uint32) error { d.turns = slices.Clone(keys); return nil }
func (d *fakeDealer) Attach(fd int) error      { d.k.random, d.k.dealer = nil, d; return nil }
func (d *fakeDealer) Close()                   {}

// rig is the groups of a baton with one reuseport listener, on the fake
// kernel, and pids standing in for its workers.
type rig struct {
	k       *fakeKernel
	m       *Groups
	g       *Group
	log     *strings.Builder
	nextPID int
}

// newRig makes the rig, with a dealer or with the classic program.
func newRig(t *testing.T, dealt bool) *rig {
	t.Helper()
	k := newFakeKernel()
	var log strings.Builder
	m := New(k, slog.New(slog.NewTextHandler(&log, nil)))
	g := &Group{Name: "http", Socks: []*Socket{{FD: k.listen()}}, Random: "turned off"}
	if dealt {
		d := k.newDealer()
		g.Socks[0].Key, _ = d.Add(g.Socks[0].FD)
		g.Deal, g.Random = d, ""
	}
	m.Add(g)
	return &rig{k: k, m: m, g: g, log: &log, nextPID: 101}
}

// eachProgram runs test with the dealer and with the classic program.
func eachProgram(t *testing.T, test func(t *testing.T, r *rig)) {
	for _, dealt := range []bool{true, false} {
		t.Run(map[bool]string{true: "dealt", false: "random"}[dealt], func(t *testing.T) {
			test(t, newRig(t, dealt))
		})
	}
}

// worker starts a stand-in worker of slot and gives it a socket, as the
// supervisor's Start does; it returns its pid and its socket.
func (r *rig) worker(t *testing.T, slot int) (int, *Socket) {
	t.Helper()
	return r.replacement(t, slot, 0)
}

// replacement is worker for one started to replace the worker replaces
// while that one runs.
func (r *rig) replacement(t *testing.T, slot, replaces int) (int, *Socket) {
	t.Helper()
	pid := r.nextPID
	r.nextPID++
	gs, err := r.m.Pick(r.g, slot, replaces)
	if err != nil {
		t.Fatal(err)
	}
	r.m.Hold([]*Socket{gs}, pid, slot)
	return pid, gs
}

// route tells the rig which workers are ready, as the Machine would.
func (r *rig) route(ready ...int) {
	r.m.Route(lifecycle.Routes{Ready: ready, Slots: []int{0, 1}})
}

// exit tells the rig the workers exited, as the reaper would.
func (r *rig) exit(pids ...int) {
	for _, pid := range pids {
		r.m.Release(pid)
	}
}

func (r *rig) queued(gs *Socket) int { return r.k.queued[gs.FD] }

// accept takes n connections from gs's queue, as its worker would.
func (r *rig) accept(gs *Socket, n int) { r.k.queued[gs.FD] -= n }

// unserved is the number of connections waiting in the sockets no worker
// holds: baton's free ones, and the foreign ones.
func (r *rig) unserved() int {
	n := 0
	for _, gs := range r.g.Socks {
		if !gs.Held() {
			n += r.queued(gs)
		}
	}
	for fd := range r.k.foreign {
		n += r.k.queued[fd]
	}
	return n
}

// intrude makes another process's socket listen in the group, and
// returns what closes it.
func (r *rig) intrude() (leave func()) {
	fd := r.k.listen()
	r.k.foreign[fd] = true
	return func() {
		r.k.leave(fd)
		delete(r.k.foreign, fd)
		delete(r.k.queued, fd)
	}
}

// generation starts stand-in workers of slots 0 and 1, and returns them
// and their sockets.
func (r *rig) generation(t *testing.T) ([]int, []*Socket) {
	t.Helper()
	a, sa := r.worker(t, 0)
	b, sb := r.worker(t, 1)
	return []int{a, b}, []*Socket{sa, sb}
}

// reloaded starts a generation, then a reload's, and ends the first: its
// sockets are free. It returns the second and its sockets.
func (r *rig) reloaded(t *testing.T) ([]int, []*Socket) {
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
func (r *rig) served(t *testing.T, n int, socks ...*Socket) {
	t.Helper()
	was := map[*Socket]int{}
	for _, gs := range socks {
		was[gs] = r.queued(gs)
	}
	unserved := r.unserved()
	r.k.dial(n)
	if got := r.unserved() - unserved; got != 0 {
		t.Errorf("%d of %d connections went to a socket no worker holds", got, n)
	}
	if r.g.Deal == nil {
		return
	}
	if len(was) != len(socks) {
		t.Fatalf("the workers share sockets: %v", socks)
	}
	for i, gs := range socks {
		if got := r.queued(gs) - was[gs]; got != n/len(socks) {
			t.Errorf("worker %d's socket got %d of %d: not dealt in turn to %d sockets", i, got, n, len(socks))
		}
	}
}
