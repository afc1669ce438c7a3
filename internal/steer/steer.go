package steer

import (
	"log/slog"
	"slices"
	"time"

	"github.com/batonhq/baton/internal/lifecycle"
)

// How long a worker's signal waits for its socket's queue to empty, and
// for how long the queue must have stayed empty: a handshake the kernel
// had begun towards that socket before the program left it out completes
// into its queue (on loopback within microseconds). SignalPoll is how
// often the shell looks at the queue meanwhile.
const (
	SignalWait   = time.Second
	SignalSettle = 100 * time.Millisecond
	SignalPoll   = 10 * time.Millisecond
)

// RecheckEvery is how often a group with another process's sockets is
// checked again (Recheck), to notice that they have gone.
const RecheckEvery = time.Second

// Env is the world Groups acts on: the kernel's sockets (Kernel, in
// kernel.go) and the shell's timer.
type Env interface {
	// Queued is the number of connections waiting in fd's accept queue.
	Queued(fd int) uint32
	// Bind binds a new socket where the listener beside is bound, with
	// its options, and makes it listen: it joins the group, last.
	Bind(beside int) (int, error)
	// Census counts the TCP sockets listening where fds[0] is bound, and
	// says which of fds still listen.
	Census(fds []int) (n int, listening []bool, err error)
	// AttachRandom attaches to fd's group the classic program that picks
	// one of the sockets at the indices to, at random.
	AttachRandom(fd int, to []int) error
	// Detach drops the program attached to fd's group.
	Detach(fd int)
	// Close shuts fd down and closes it: it leaves the group.
	Close(fd int)
	// MigrateOff reports whether the kernel resets the queue of a closed
	// socket instead of moving it (net.ipv4.tcp_migrate_req is 0).
	MigrateOff() bool
	// RecheckLater has Recheck called in RecheckEvery, unless a call is
	// already due.
	RecheckLater()
}

// Groups is the SO_REUSEPORT groups of a baton's listeners and the
// workers that hold their sockets. It performs no I/O but through Env.
type Groups struct {
	// Parent: this baton was started by a self-upgrade, and its parent is
	// still in charge (until TakeOver).
	Parent bool
	// OldBaton is the parent baton's pid, in a successor, until it has
	// exited (ParentExited).
	OldBaton int
	// HandedOver is set once a successor steers this baton's workers'
	// sockets.
	HandedOver bool

	env    Env
	log    *slog.Logger
	groups []*Group
	// routes are the Machine's last Routes; leaving are the workers left
	// out of the programs, about to be signalled or signalled.
	routes        lifecycle.Routes
	leaving       map[int]bool
	warnedMigrate bool
}

// New returns the groups of a baton that has none yet.
func New(env Env, log *slog.Logger) *Groups {
	return &Groups{env: env, log: log, leaving: map[int]bool{}}
}

// Add takes g in, says if it has no dealer, and checks it against the
// kernel's.
func (m *Groups) Add(g *Group) {
	m.groups = append(m.groups, g)
	m.WarnRandom(g)
	g.check(m)
}

// Remove forgets g (its listener is closed); nil is no group.
func (m *Groups) Remove(g *Group) {
	m.groups = slices.DeleteFunc(m.groups, func(o *Group) bool { return o == g })
}

// WarnRandom warns when g has no dealer: the classic program spreads
// connections at random. The first time, it also warns if retiring a
// socket resets the connections waiting in its queue (the classic
// program does not move them).
func (m *Groups) WarnRandom(g *Group) {
	if g.Deal != nil {
		return
	}
	m.log.Warn("balance = \"reuseport\": connections are spread at random, not in turn (dealing them in turn takes an eBPF program, which needs CAP_BPF)", "listener", g.Name, "reason", g.Random)
	if m.warnedMigrate {
		return
	}
	m.warnedMigrate = true
	if m.env.MigrateOff() {
		m.log.Warn("net.ipv4.tcp_migrate_req is 0: when baton closes a worker's socket with connections waiting (its worker died and none replaces it) they are reset; set it to 1 so the kernel moves them to the other workers' sockets",
			"balance", "reuseport")
	}
}

// upgrading reports whether this baton started a self-upgrade that is
// under way or handed over: its successor binds sockets, and steers.
func (m *Groups) upgrading() bool { return m.routes.Shared && !m.Parent }

// batonShares reports whether another baton uses the groups' sockets (a
// self-upgrade under way, or its parent not yet exited): neither baton
// then closes one.
func (m *Groups) batonShares() bool { return m.routes.Shared || m.OldBaton != 0 || m.Parent }

// Pick chooses g's socket for a new worker of slot, which replaces the
// worker replaces (0: none) while that one runs. Steered: the listener
// if the replaced worker holds it (docs/balancing.md: it is never
// closed, so its queue waits for a worker that accepts), else a free
// one, else one bound beside it, else (upgrading baton, frozen group) a
// shared one. Not steered, a slot's socket is shared by its old and new
// worker (ofSlot), and sweep closes another once its workers are gone.
func (m *Groups) Pick(g *Group, slot, replaces int) (*Socket, error) {
	if replaces != 0 && slices.Contains(g.Socks[0].holders, replaces) {
		return g.Socks[0], nil
	}
	if g.off {
		if gs := g.ofSlot(slot); gs != nil {
			return gs, nil
		}
	} else if gs := g.free(m.env, slot); gs != nil {
		return gs, nil
	}
	if !g.off && (m.upgrading() || g.frozen()) {
		// The successor binds (a socket bound here would take an index
		// it counts as its own), or another process's sockets are last.
		if gs := g.share(slot); gs != nil {
			return gs, nil
		}
		return g.Socks[0], nil
	}
	if g.off && m.upgrading() {
		return g.Socks[0], nil
	}
	fd, err := m.env.Bind(g.Socks[0].FD)
	if err != nil {
		return nil, err
	}
	gs := &Socket{FD: fd}
	g.Socks = append(g.Socks, gs)
	if g.Deal != nil {
		if gs.Key, err = g.Deal.Add(fd); err != nil {
			g.dropDealer(m, err.Error())
		}
	}
	wasOff := g.off
	g.check(m)
	if !wasOff && (g.off || g.frozen()) {
		// The group changed as this one was bound: under the classic
		// program another process's socket may have joined before it.
		if i := slices.Index(g.Socks, gs); i >= 0 {
			g.retire(m, i)
		}
		return m.Pick(g, slot, replaces)
	}
	return gs, nil
}

// Hold records that pid, of slot, got the sockets picked for it.
func (m *Groups) Hold(socks []*Socket, pid, slot int) {
	for _, gs := range socks {
		gs.holders = append(gs.holders, pid)
		gs.slot = slot
	}
	m.sweep() // a group given up as it bound one keeps no free socket
	m.steer() // one that steers again gets its program
}

// Route takes the Machine's Routes: which workers are ready, which
// slots are served or refilled, whether another baton shares the
// sockets.
func (m *Groups) Route(r lifecycle.Routes) {
	wasShared := m.routes.Shared
	m.routes = r
	if wasShared && !r.Shared && m.OldBaton == 0 {
		// A self-upgrade failed: the sockets left to the successor are
		// this baton's again, and its program may have been replaced.
		for _, g := range m.groups {
			g.to = nil
			for _, gs := range g.Socks {
				gs.Theirs = false
			}
		}
	}
	m.sweep()
	m.steer()
}

// Release gives up what pid held, once it exited.
func (m *Groups) Release(pid int) {
	delete(m.leaving, pid)
	for _, gs := range m.Sockets(pid) {
		gs.holders = slices.DeleteFunc(gs.holders, func(p int) bool { return p == pid })
	}
	m.sweep()
	m.steer()
}

// Sockets returns the group sockets pid holds.
func (m *Groups) Sockets(pid int) []*Socket {
	var out []*Socket
	for _, g := range m.groups {
		for _, gs := range g.Socks {
			if slices.Contains(gs.holders, pid) {
				out = append(out, gs)
			}
		}
	}
	return out
}

// LeaveFree leaves, as a self-upgrade starts, the sockets no worker
// holds to the successor's workers, as its note says.
func (m *Groups) LeaveFree() {
	for _, g := range m.groups {
		for _, gs := range g.Socks {
			gs.Theirs = !gs.Held()
		}
	}
}

// ParentExited makes the sockets the parent's workers held this baton's.
func (m *Groups) ParentExited() {
	m.OldBaton = 0
	for _, g := range m.groups {
		for _, gs := range g.Socks {
			gs.Theirs = false
		}
		g.check(m)
	}
	m.sweep()
	m.steer()
}

// Recheck looks at the groups again (RecheckLater), and reports whether
// another process's sockets are still in one.
func (m *Groups) Recheck() bool {
	m.sweep()
	m.steer()
	return slices.ContainsFunc(m.groups, func(g *Group) bool { return g.foreign > 0 })
}

// steer attaches to each steered group a program sending new connections
// to the sockets of the ready workers not leaving; when there are none, of
// the live workers not leaving (at start); when there are none either,
// while some slot is still to be served, of the live workers (leaving
// ones still accept until they are signalled). Between a self-upgrade's
// start and the successor taking charge neither baton changes the
// program: the parent's stays in force, and if the upgrade fails nothing
// was sent to the successor's workers.
func (m *Groups) steer() {
	if m.upgrading() || m.Parent {
		return
	}
	for _, g := range m.groups {
		if g.off {
			continue
		}
		to := m.targets(g, true, false)
		if len(to) == 0 {
			to = m.targets(g, false, false)
		}
		if len(to) == 0 && len(m.routes.Slots) > 0 {
			to = m.targets(g, false, true)
		}
		if len(to) == 0 || slices.Equal(to, g.to) {
			continue
		}
		g.point(m, to)
	}
}

// targets returns the indices of g's sockets held by a worker that is
// ready (or, with ready false, live) and not leaving (or, with leaving,
// whether leaving or not).
func (m *Groups) targets(g *Group, ready, leaving bool) []int {
	var to []int
	for i, gs := range g.Socks {
		for _, pid := range gs.holders {
			if (leaving || !m.leaving[pid]) && (!ready || slices.Contains(m.routes.Ready, pid)) {
				to = append(to, i)
				break
			}
		}
	}
	return to
}

// sweep retires the sockets no worker holds that must not stay: in a
// group not steered, every one; in a steered one, one with connections
// waiting that no worker will take (no worker of its slot is yet to
// start), and then every free one without connections too, since the
// kernel moves a retired socket's queue by its hash to any socket still
// listening. (A free listener itself, which is never retired, may get
// some.) First it checks the group against the kernel's (check); in a
// frozen group it retires none. Never while another baton shares the
// sockets.
func (m *Groups) sweep() {
	if m.batonShares() {
		return
	}
	for _, g := range m.groups {
		g.check(m)
		if g.frozen() {
			continue
		}
		stranded := func(gs *Socket) bool { return m.env.Queued(gs.FD) > 0 && !m.refilling(g, gs.slot) }
		free := func(gs *Socket) bool { return !gs.Held() && !gs.Theirs }
		if !g.off && !slices.ContainsFunc(g.Socks[1:], func(gs *Socket) bool { return free(gs) && stranded(gs) }) {
			continue
		}
		for i := len(g.Socks) - 1; i >= 1; i-- {
			if gs := g.Socks[i]; free(gs) && (g.off || m.env.Queued(gs.FD) == 0 || stranded(gs)) {
				g.retire(m, i)
			}
		}
	}
}

// refilling reports whether a worker of slot is yet to start, which will
// take a free socket of g that was its slot's.
func (m *Groups) refilling(g *Group, slot int) bool {
	if !slices.Contains(m.routes.Slots, slot) {
		return false
	}
	for _, gs := range g.Socks {
		if gs.slot != slot {
			continue
		}
		for _, pid := range gs.holders {
			if !m.leaving[pid] {
				return false
			}
		}
	}
	return true
}

// Leave is told that pid is to get sig. For SIGTERM it leaves pid out of
// the programs, and reports whether its sockets now get no new
// connection, so that the signal should wait for their queues (Wait).
// Any other signal never waits.
func (m *Groups) Leave(pid int, sig lifecycle.Signal) bool {
	if sig != lifecycle.SIGTERM {
		return false
	}
	socks := m.Sockets(pid)
	if len(socks) == 0 {
		return false
	}
	m.leaving[pid] = true
	m.steer()
	for _, g := range m.groups {
		for i, gs := range g.Socks {
			if !slices.Contains(gs.holders, pid) {
				continue
			}
			for _, other := range gs.holders {
				if !m.leaving[other] {
					return false // shared with a worker that stays
				}
			}
			if g.off || !m.HandedOver && (g.to == nil || slices.Contains(g.to, i)) {
				return false
			}
		}
	}
	return true
}

// Wait is a signal waiting for its worker's sockets' queues to empty,
// and then for the worker to begin serving what it accepted: a server
// may close at SIGTERM a connection it has read nothing of
// (docs/languages.md), whose client then fails. The signal goes once
// the queues have Settled and the worker holds no such connection
// (Kernel.Unserved), or once the wait is Over, whatever waits.
type Wait struct {
	deadline   time.Time
	emptySince time.Time
}

// NewWait starts the wait of a signal Leave said should wait, at now.
func NewWait(now time.Time) *Wait { return &Wait{deadline: now.Add(SignalWait)} }

// Settled reports whether the queues have been empty (queued is false)
// for SignalSettle at now.
func (w *Wait) Settled(now time.Time, queued bool) bool {
	switch {
	case queued:
		w.emptySince = time.Time{}
	case w.emptySince.IsZero():
		w.emptySince = now
	}
	return !queued && now.Sub(w.emptySince) >= SignalSettle
}

// Over reports whether the wait has lasted SignalWait at now.
func (w *Wait) Over(now time.Time) bool { return now.After(w.deadline) }
