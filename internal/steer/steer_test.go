package steer

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/lifecycle"
)

// The replacement of a worker that holds the listener itself, started
// while that one runs (it said STOPPING=1, or hung), shares the listener:
// baton never closes it, so a connection that waited there for a worker
// that no longer accepts is the replacement's to take. The replacement of
// a worker on another socket gets one of its own: that socket is closed
// once its worker has gone, and its queue moves to the others.
func TestReplacementTakesTheListener(t *testing.T) {
	eachProgram(t, func(t *testing.T, r *rig) {
		a, ga := r.worker(t, 0)
		b, gb := r.worker(t, 1)
		if ga != r.g.Socks[0] || gb == ga {
			t.Fatalf("the first two workers got sockets %d and %d, want the listener and another", slices.Index(r.g.Socks, ga), slices.Index(r.g.Socks, gb))
		}
		if _, got := r.replacement(t, 0, a); got != ga {
			t.Errorf("the replacement of the listener's worker got socket %d, want the listener", slices.Index(r.g.Socks, got))
		}
		if _, got := r.replacement(t, 1, b); got == gb || got == ga {
			t.Errorf("the replacement of worker 1 got socket %d, want one of its own", slices.Index(r.g.Socks, got))
		}
	})
}

// signal is what the shell does with a worker's signal: it asks Leave,
// and if the signal should wait, polls the queues of the worker's
// sockets every SignalPoll until Wait says it is due. accepted is the
// worker accepting what waits, at each poll. It returns how long the
// signal waited, and false if it never went.
func (r *rig) signal(pid int, sig lifecycle.Signal, accepted func()) (time.Duration, bool) {
	if !r.m.Leave(pid, sig) {
		return 0, true
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := NewWait(start)
	for now := start; now.Sub(start) < 10*time.Second; now = now.Add(SignalPoll) {
		queued := false
		for _, gs := range r.m.Sockets(pid) {
			queued = queued || r.queued(gs) > 0
		}
		if w.Over(now) || w.Settled(now, queued) {
			return now.Sub(start), true
		}
		accepted()
	}
	return 0, false
}

// A worker told to stop is first left out of the program, and signalled
// only once it has accepted what waited in its socket's queue; new
// connections go to the other worker's socket meanwhile.
func TestSignalWaitsForTheQueue(t *testing.T) {
	eachProgram(t, func(t *testing.T, r *rig) {
		a, sa := r.worker(t, 0)
		b, sb := r.worker(t, 1)
		if sa == sb || len(r.g.Socks) != 2 {
			t.Fatalf("two workers got %d sockets, want one each", len(r.g.Socks))
		}
		r.route(a) // everything goes to a's socket
		r.k.dial(3)
		if n := r.queued(sa); n != 3 {
			t.Fatalf("a's queue holds %d, want 3", n)
		}
		r.route(a, b)
		if !r.m.Leave(a, lifecycle.SIGTERM) {
			t.Fatal("a was signalled with connections waiting in its socket")
		}
		r.k.dial(5)
		if na, nb := r.queued(sa), r.queued(sb); na != 3 || nb != 5 {
			t.Fatalf("queues a %d, b %d after a was left out; want 3 and 5", na, nb)
		}
		if _, ok := r.signal(a, lifecycle.SIGTERM, func() {
			if n := r.queued(sa); n > 0 {
				r.accept(sa, n)
			}
		}); !ok {
			t.Fatal("the worker was never signalled")
		}
	})
}

// With the dealer, new connections go to the ready workers' sockets in
// turn, exactly: 64 over 4 workers is 16 each, and a worker left out
// (leaving, or not ready) gets none.
func TestDealsInTurn(t *testing.T) {
	r := newRig(t, true)
	var ws []int
	var socks []*Socket
	for slot := range 5 {
		w, gs := r.worker(t, slot)
		ws, socks = append(ws, w), append(socks, gs)
	}
	r.route(ws[:4]...)
	r.k.dial(64)
	for i, gs := range socks {
		if want := map[bool]int{true: 16, false: 0}[i < 4]; r.queued(gs) != want {
			t.Errorf("worker %d's queue holds %d of 64, want %d", i, r.queued(gs), want)
		}
	}
}

// A worker that accepts nothing is signalled anyway, SignalWait later;
// SIGKILL never waits.
func TestSignalWaitIsBounded(t *testing.T) {
	eachProgram(t, func(t *testing.T, r *rig) {
		a, sa := r.worker(t, 0)
		b, _ := r.worker(t, 1)
		r.route(a)
		r.k.dial(2)
		r.route(a, b)
		if _, ok := r.signal(a, lifecycle.SIGTERM, func() {}); !ok {
			t.Fatal("the worker was never signalled")
		}
		if n := r.queued(sa); n != 2 {
			t.Errorf("a's queue holds %d, want the 2 it never accepted", n)
		}

		c, _ := r.worker(t, 0)
		r.route(b, c)
		if r.m.Leave(b, lifecycle.SIGKILL) {
			t.Fatal("SIGKILL did not reach b: it waits for b's queue")
		}
	})
}

// Wait: a signal goes once the queues have stayed empty for SignalSettle
// (a handshake begun before the program left the socket out completes
// into its queue meanwhile) and the worker holds no connection it has
// read nothing of, or at SignalWait whatever waits.
func TestWait(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		// queued[i]: connections wait at i*10ms; unserved[i]: the worker
		// holds one it has read nothing of (false past its end).
		queued, unserved []bool
		want             time.Duration // when it is due; 0: not within queued
	}{
		{"empty from the start", slices.Repeat([]bool{false}, 12), nil, 100 * ms},
		{"emptied at 30ms", append(slices.Repeat([]bool{true}, 3), slices.Repeat([]bool{false}, 12)...), nil, 130 * ms},
		{"a handshake completes at 50ms", append(append(slices.Repeat([]bool{false}, 5), true), slices.Repeat([]bool{false}, 11)...), nil, 160 * ms},
		{"never empties", slices.Repeat([]bool{true}, 110), nil, 1010 * ms},
		{"a request read at 250ms", slices.Repeat([]bool{false}, 30), slices.Repeat([]bool{true}, 25), 250 * ms},
		{"a client that never sends", slices.Repeat([]bool{false}, 110), slices.Repeat([]bool{true}, 110), 1010 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			w := NewWait(start)
			got := time.Duration(0)
			for i, q := range tt.queued {
				now := start.Add(time.Duration(i) * 10 * ms)
				if w.Over(now) || w.Settled(now, q) && !(i < len(tt.unserved) && tt.unserved[i]) {
					got = now.Sub(start)
					break
				}
			}
			if got != tt.want {
				t.Errorf("due at %v, want %v", got, tt.want)
			}
		})
	}
}

// A socket no worker will take again, with connections waiting (its
// worker died, and its slot is gone), is taken out of the group, and so
// is every free one (the kernel moves the queue by its hash to any socket
// still listening). The kernel moves the group's last socket into each
// leaving one's place, and the program follows: new connections reach
// the ready workers.
func TestRetireKeepsTheKernelsOrder(t *testing.T) {
	eachProgram(t, func(t *testing.T, r *rig) {
		a, sa := r.worker(t, 0)
		b, sb := r.worker(t, 1)
		c, _ := r.worker(t, 2)
		d, sd := r.worker(t, 3)
		all := []int{0, 1, 2, 3}
		r.m.Route(lifecycle.Routes{Ready: []int{b}, Slots: all})
		r.k.dial(2) // b's, and b dies
		r.exit(b, c)
		if len(r.g.Socks) != 4 || r.queued(sb) != 2 {
			t.Fatalf("%d sockets, b's holding %d: a socket whose slot is refilled stays, with its queue", len(r.g.Socks), r.queued(sb))
		}
		r.m.Route(lifecycle.Routes{Ready: []int{a, d}, Slots: []int{0, 3}})
		if got, want := r.g.Socks, []*Socket{sa, sd}; !slices.Equal(got, want) {
			t.Fatalf("after b's and c's sockets were retired the group is %v, want a's and d's (d's moved into c's place, then b's)", got)
		}
		if n := len(r.k.order); n != 2 {
			t.Fatalf("%d sockets listen, want 2", n)
		}
		if r.g.to == nil || !slices.Equal(r.g.to, []int{0, 1}) {
			t.Errorf("the program picks from %v, want a's and d's indices [0 1]", r.g.to)
		}
		was := r.queued(sa) + r.queued(sd) // b's 2 moved here
		r.k.dial(10)
		if got := r.queued(sa) + r.queued(sd) - was; got != 10 {
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
	eachProgram(t, func(t *testing.T, r *rig) {
		r.intrude()
		a, sa := r.worker(t, 0)
		b, sb := r.worker(t, 1)
		g := r.g
		if g.off || g.foreign != 1 || !strings.Contains(r.log.String(), "another process listens on the address") {
			t.Fatalf("off %v, %d foreign sockets seen; log:\n%s", g.off, g.foreign, r.log)
		}
		if dealt := g.Deal != nil; dealt == (sa == sb) || len(g.Socks) != map[bool]int{true: 2, false: 1}[dealt] {
			t.Fatalf("%d sockets for 2 workers (dealt %v)", len(g.Socks), dealt)
		}
		r.route(a, b)
		r.k.dial(20)
		if n := r.unserved(); n != 0 {
			t.Errorf("%d of 20 connections went to a socket no worker holds", n)
		}
		if n := len(r.k.order); n != len(g.Socks)+1 {
			t.Errorf("%d sockets listen, want baton's %d and the other one", n, len(g.Socks))
		}
	})
}

// A baton started by a self-upgrade leaves the program alone until it is
// in charge: if the upgrade fails, nothing was sent to its workers.
func TestSuccessorSteersOnceInCharge(t *testing.T) {
	eachProgram(t, func(t *testing.T, r *rig) {
		r.m.Parent = true // a parent still in charge
		a, _ := r.worker(t, 0)
		r.m.Route(lifecycle.Routes{Ready: []int{a}, Slots: []int{0}, Shared: true})
		if r.g.to != nil {
			t.Fatalf("a successor not in charge attached a program picking from %v", r.g.to)
		}
		r.m.Parent = false // TakeOver
		r.m.Route(lifecycle.Routes{Ready: []int{a}, Slots: []int{0}})
		if !slices.Equal(r.g.to, []int{0}) {
			t.Fatalf("in charge, the program picks from %v, want [0]", r.g.to)
		}
	})
}

// A socket that joins the group after baton bound its own is noticed at
// the next change of routes, and steering goes on.
func TestForeignSocketLater(t *testing.T) {
	r := newRig(t, true)
	a, _ := r.worker(t, 0)
	b, _ := r.worker(t, 1)
	r.route(a, b)
	r.intrude()
	r.route(a)
	if g := r.g; g.off || g.foreign != 1 || !slices.Equal(g.to, []int{0}) {
		t.Fatalf("off %v, %d foreign sockets seen, the program picks from %v; want a's [0]", g.off, g.foreign, g.to)
	}
}

// A process of the same user that binds the port with SO_REUSEPORT while
// a reload runs leaves no socket of the group without a worker: while it
// is there and after it has gone, every new connection reaches a socket
// a worker holds, and the dealer deals them to the new workers in turn.
func TestIntruderDuringReload(t *testing.T) {
	eachProgram(t, func(t *testing.T, r *rig) {
		old, _ := r.generation(t)
		r.route(old...)
		leave := r.intrude()
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
	eachProgram(t, func(t *testing.T, r *rig) {
		ws, socks := r.reloaded(t)
		leave := r.intrude()
		r.route(ws...)
		r.k.Detach(0) // the other process detaches baton's program
		leave()
		from := r.log.Len()
		for !strings.Contains(r.log.String()[from:], "baton's alone again") {
			if !r.k.recheck {
				t.Fatalf("the group was not checked again after the other process left; log:\n%s", r.log)
			}
			r.k.recheck = false // the shell's timer fires
			if r.m.Recheck() {
				r.k.RecheckLater()
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
	eachProgram(t, func(t *testing.T, r *rig) {
		ws, socks := r.reloaded(t) // the listener and slot 1's old socket are free
		r.k.leave(socks[1].FD)     // shutdown(SHUT_RD)
		r.route(ws...)
		g := r.g
		if dealt := g.Deal != nil; g.off == dealt || slices.Contains(g.Socks, socks[1]) != !dealt {
			t.Fatalf("off %v, the shut socket in the group %v (dealt %v); log:\n%s", g.off, slices.Contains(g.Socks, socks[1]), dealt, r.log)
		}
		e, se := r.worker(t, 1) // the replacement of the worker that shut it
		r.exit(ws[1])
		r.route(ws[0], e)
		r.served(t, 20, socks[0], se)
	})
}

// A group has a socket per worker alive at once, at the busiest moment,
// however many reloads came and went: a free socket is always taken
// before one is bound. Here reloads overlap by one to three generations.
func TestGroupSizeIsTheMostWorkersAlive(t *testing.T) {
	eachProgram(t, func(t *testing.T, r *rig) {
		var alive [][]int
		most := 0
		for i := range 30 {
			ws, _ := r.generation(t)
			r.route(ws...)
			alive = append(alive, ws)
			most = max(most, 2*len(alive))
			for len(alive) > 1+i%3 {
				r.exit(alive[0]...)
				alive = alive[1:]
			}
		}
		if got := len(r.g.Socks); got != most {
			t.Errorf("%d sockets after 30 reloads with at most %d workers alive at once, want %d", got, most, most)
		}
	})
}
