package steer

import (
	"fmt"
	"slices"
)

// Socket is one socket of a listener's group.
type Socket struct {
	FD      int
	Key     uint32 // its key in the group's dealer, if it has one
	PassKey string // the shell's name for it with the upgrader, "" if not registered
	// Theirs: the other baton of a self-upgrade uses it. In the
	// upgrading one, a socket left free for its successor's workers; in
	// the successor, one its parent's workers hold, until the parent has
	// exited.
	Theirs  bool
	holders []int // the live workers it was given to
	slot    int   // the slot of the last worker it was given to
}

// Held reports whether a live worker holds gs.
func (gs *Socket) Held() bool { return len(gs.holders) > 0 }

// Dealer is a group's eBPF program and its maps (a *deal.Dealer).
type Dealer interface {
	Add(fd int) (uint32, error)
	Deal(keys []uint32) error
	Attach(fd int) error
	Close()
}

// Group is a listener's SO_REUSEPORT sockets in the kernel's order:
// Socks[0] is the listener itself.
type Group struct {
	Name  string
	Socks []*Socket
	// Deal deals connections in turn to the sockets at to; nil when the
	// classic program picks at random, and Random says why.
	Deal   Dealer
	Random string
	// DealPass names Deal's descriptors for the upgrader, "" if not
	// registered.
	DealPass string

	// to are the indices the attached program picks from; nil when baton
	// has not attached one (or another baton may have since).
	to []int
	// off: not steered, because the kernel refused the program or a
	// socket of baton's left the group. Then a socket is retired as soon
	// as no worker holds it, and workers are signalled at once. Under the
	// dealer, whose keys do not depend on the kernel's order, steering
	// resumes once the group is what baton holds again.
	off bool
	// foreign is how many sockets of another process the last check found
	// listening in the group. Under the classic program baton binds and
	// retires none meanwhile (frozen).
	foreign int
	// unordered: Socks may no longer be in the kernel's order (a socket
	// of baton's left the group under the dealer), so the classic program
	// cannot take over from the dealer.
	unordered bool
}

// frozen reports whether the kernel's order of the group must not change:
// the classic program steers it, and another process's sockets follow
// baton's (a socket of baton's leaving would move one of theirs into its
// place, and one bound would come after theirs).
func (g *Group) frozen() bool { return !g.off && g.Deal == nil && g.foreign > 0 }

// free returns the socket for a new worker of slot among those no live
// worker holds: one with connections waiting (a worker that died left
// them), its slot's first; else the first free one; nil if none.
func (g *Group) free(env Env, slot int) *Socket {
	var first, waiting *Socket
	for _, gs := range g.Socks {
		if gs.Held() || gs.Theirs {
			continue
		}
		if first == nil {
			first = gs
		}
		if env.Queued(gs.FD) > 0 && (waiting == nil || gs.slot == slot && waiting.slot != slot) {
			waiting = gs
		}
	}
	if waiting != nil {
		return waiting
	}
	return first
}

// ofSlot returns the socket of slot's workers: the listener itself for
// slot 0, or for any slot while no worker holds it (it is never retired,
// and the kernel's hash reaches it), else one a worker of slot holds; nil
// if none.
func (g *Group) ofSlot(slot int) *Socket {
	if slot == 0 || !g.Socks[0].Held() {
		return g.Socks[0]
	}
	for _, gs := range g.Socks[1:] {
		if gs.Held() && gs.slot == slot {
			return gs
		}
	}
	return nil
}

// share returns a held socket for a new worker of slot, when none is
// free and none may be bound (the upgrading baton, while its successor
// binds): its slot's, else the one with the fewest holders.
func (g *Group) share(slot int) *Socket {
	var best *Socket
	for _, gs := range g.Socks {
		if gs.Theirs {
			continue
		}
		if gs.Held() && gs.slot == slot {
			return gs
		}
		if best == nil || len(gs.holders) < len(best.holders) {
			best = gs
		}
	}
	return best
}

// attach makes the group's program pick from the sockets at indices to:
// the dealer's in turn, or the classic one's at random.
func (g *Group) attach(env Env, to []int) error {
	if g.Deal != nil {
		keys := make([]uint32, len(to))
		for i, idx := range to {
			keys[i] = g.Socks[idx].Key
		}
		if err := g.Deal.Deal(keys); err != nil {
			return err
		}
		if g.to == nil {
			if err := g.Deal.Attach(g.Socks[0].FD); err != nil {
				return err
			}
		}
		g.to = slices.Clone(to)
		return nil
	}
	if err := env.AttachRandom(g.Socks[0].FD, to); err != nil {
		return err
	}
	g.to = slices.Clone(to)
	return nil
}

// point attaches the program for to; if the dealer fails, the classic
// one; if that fails too, steering ends.
func (g *Group) point(m *Groups, to []int) {
	err := g.attach(m.env, to)
	if err != nil && g.Deal != nil {
		g.dropDealer(m, err.Error())
		err = g.attach(m.env, to)
	}
	if err != nil {
		g.giveUp(m, err.Error())
	}
}

// dropDealer falls back to the classic program, saying why; if Socks may
// not be in the kernel's order, steering ends instead.
func (g *Group) dropDealer(m *Groups, why string) {
	g.Deal.Close()
	g.Deal, g.Random, g.DealPass, g.to = nil, why, "", nil
	m.WarnRandom(g)
	if g.unordered {
		g.giveUp(m, "the classic program needs the kernel's order of the sockets, which baton lost when one left the group")
	}
}

// giveUp stops steering the group, saying why: the kernel spreads
// connections by its hash over every socket, so none may stay free.
func (g *Group) giveUp(m *Groups, why string) {
	if g.off {
		return
	}
	g.off = true
	m.env.Detach(g.Socks[0].FD)
	g.to = nil
	m.log.Warn("balance = \"reuseport\": not steering connections: workers are signalled without waiting for their queues, and a socket is closed when its worker goes", "listener", g.Name, "reason", why)
}

// check compares the group with the kernel's (see the package comment):
// it gives up steering when baton cannot count the group or the classic
// program's order was lost, drops a socket of baton's that no longer
// listens under the dealer, takes steering up again under the dealer
// once the group is what baton holds, and notes another process's
// sockets. While another baton uses the sockets it changes nothing but
// that note.
func (g *Group) check(m *Groups) {
	if g.off && g.Deal == nil {
		return // refused, or the classic program's order is lost: for good
	}
	fds := make([]int, len(g.Socks))
	for i, gs := range g.Socks {
		fds[i] = gs.FD
	}
	n, listening, err := m.env.Census(fds)
	if err != nil {
		if !m.batonShares() {
			g.giveUp(m, err.Error())
		}
		return
	}
	v := judge(n, listening)
	if m.batonShares() {
		g.note(m, v.foreign)
		return
	}
	if len(v.shut) > 0 && (g.Deal == nil || slices.Contains(v.shut, 0)) {
		g.giveUp(m, fmt.Sprintf("socket %d of its SO_REUSEPORT group no longer listens (a worker shut it down)", v.shut[0]))
		return
	}
	for _, i := range v.shut {
		g.unordered = true
		g.retire(m, i)
	}
	if g.off {
		g.off, g.to = false, nil
		m.log.Info("balance = \"reuseport\": steering connections again", "listener", g.Name)
	}
	g.note(m, v.foreign)
}

// census is what a check of a group found: how many sockets of another
// process listen in it, and which of baton's no longer do, last first.
type census struct {
	foreign int
	shut    []int
}

// judge reads a check: n sockets listen on the group's address, and
// listening says which of baton's do.
func judge(n int, listening []bool) census {
	var c census
	mine := 0
	for i := len(listening) - 1; i >= 0; i-- {
		if listening[i] {
			mine++
		} else {
			c.shut = append(c.shut, i)
		}
	}
	c.foreign = max(n-mine, 0)
	return c
}

// note records how many sockets of another process the group has, says
// when that goes from none to some and back, and has the groups checked
// again while there are some. Once they have gone, baton's program is
// attached again at once (the other process may have detached or
// replaced it), before a sweep closes a socket whose queue it moves.
func (g *Group) note(m *Groups, foreign int) {
	switch {
	case foreign > 0 && g.foreign == 0:
		how := "baton's program sends them nothing"
		if g.Deal == nil {
			how += ", and baton binds no socket for its workers until they have gone (workers share)"
		}
		m.log.Warn("balance = \"reuseport\": another process listens on the address (it bound it with SO_REUSEPORT)", "listener", g.Name, "sockets", foreign, "steering", how)
	case foreign == 0 && g.foreign > 0:
		m.log.Info("balance = \"reuseport\": the SO_REUSEPORT group is baton's alone again", "listener", g.Name)
		if to := g.to; to != nil && !m.batonShares() {
			g.to = nil // attach it, not just deal
			g.point(m, to)
		}
	}
	g.foreign = foreign
	if foreign > 0 {
		m.env.RecheckLater()
	}
}

// retire takes the socket at index i out of the group and closes it. The
// kernel moves the last socket into its place, and the program is pointed
// at the targets in that order first. The dealer moves the retired
// socket's queue to them; the classic program sends what would go to the
// moved socket to the retired one until the shutdown, and the kernel
// moves that queue by its hash with net.ipv4.tcp_migrate_req = 1.
func (g *Group) retire(m *Groups, i int) {
	last := len(g.Socks) - 1
	gs := g.Socks[i]
	g.Socks[i] = g.Socks[last]
	g.Socks = g.Socks[:last]
	if !g.off && g.to != nil {
		var to []int
		for _, idx := range g.to {
			switch idx {
			case i:
			case last:
				to = append(to, i)
			default:
				to = append(to, idx)
			}
		}
		if len(to) > 0 {
			g.point(m, to)
		}
	}
	m.env.Close(gs.FD)
}
