package supervisor

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/deal"
	"github.com/batonhq/baton/internal/lifecycle"
)

// Steering (worker.balance = "reuseport"; docs/balancing.md, "reuseport").
// Each TCP listener is a SO_REUSEPORT group of sockets that baton holds
// for its whole life, one per worker at a time: a new worker takes a
// socket no live worker holds, and another is bound beside the listener
// when there is none, so a reload's new worker never shares a socket with
// the one it replaces. An eBPF program attached to the group (deal) deals
// each new connection to the socket of a ready worker, in turn; where the
// kernel refuses to load it (baton without CAP_BPF), a classic BPF
// program (SO_ATTACH_REUSEPORT_CBPF) picks one at random. A worker about
// to be told to stop is first
// left out of the program, and is signalled once its socket's accept
// queue is empty: a server that drops at shutdown what it accepted but
// had not served yet drops nothing, and a socket no worker holds receives
// nothing.
//
// The classic program names sockets by their index in the kernel's group:
// a socket joins at the end when it listens, and one that leaves is
// replaced by the last (net/core/sock_reuseport.c). group.socks keeps
// that order, and a self-upgrade passes it on; group.to holds indices in
// that order under either program (the dealer's keys are looked up from
// them). check compares the group with the kernel's at every sweep and
// after a bind. Sockets of another process of the same user
// (it bound the port with SO_REUSEPORT) get nothing from either program,
// so steering goes on; the classic program's indices would shift if a
// socket left or joined before theirs, so under it baton binds and
// retires none while they are there. A timer checks again every
// foreignRecheck until they have gone, then attaches baton's program
// again (the other process may have replaced it). A socket of baton's
// that stopped listening (a worker shut it down) is dropped under the
// dealer; under the classic program, whose order it changed, steering
// ends (giveUp).

// Classic BPF's ancillary load of a random number (linux/filter.h).
const (
	skfAdOff    = 0xfffff000 // SKF_AD_OFF, -0x1000
	skfAdRandom = 56         // SKF_AD_RANDOM
)

// How long a worker's signal waits for its socket's queue to empty, and
// for how long the queue must have stayed empty: a handshake the kernel
// had begun towards that socket before the program left it out completes
// into its queue (on loopback within microseconds).
const (
	steerWait   = time.Second
	steerSettle = 100 * time.Millisecond
	steerPoll   = 10 * time.Millisecond
)

// foreignRecheck is how often a group with another process's sockets is
// checked again, to notice that they have gone.
const foreignRecheck = time.Second

// groupSocket is one socket of a listener's group.
type groupSocket struct {
	fd      int
	key     uint32 // its key in the group's dealer, if it has one
	passKey string // its name for the upgrader, "" if not registered
	holders []int  // the live workers it was given to
	slot    int    // the slot of the last worker it was given to
	// theirs: the other baton of a self-upgrade uses it. In the
	// upgrading one, a socket left free for its successor's workers; in
	// the successor, one its parent's workers hold, until the parent
	// has exited.
	theirs bool
}

// group is a listener's SO_REUSEPORT sockets in the kernel's order:
// socks[0] is the listener itself.
type group struct {
	name  string
	socks []*groupSocket
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
	// unordered: socks may no longer be in the kernel's order (a socket
	// of baton's left the group under the dealer), so the classic
	// program cannot take over from the dealer.
	unordered bool
	// deal deals connections in turn to the sockets at to; nil when the
	// classic program picks at random, and random says why.
	deal   *deal.Dealer
	random string
	// dealPass names deal's descriptors for the upgrader (with the
	// suffixes of dealFds), "" if not registered.
	dealPass string
}

// dealInTurn: groups get a dealer when the kernel lets baton load one (a
// variable for tests of the classic program).
var dealInTurn = true

// newGroup makes the group of the listener fd. detach drops the program
// another baton may have left attached to it (a socket from systemd), so
// that its maps, which hold the socket, are freed; never while that
// baton still steers.
func newGroup(name string, fd int, detach bool) *group {
	g := &group{name: name, socks: []*groupSocket{{fd: fd}}}
	if detach {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
	}
	g.seat(detach)
	return g
}

// seat gives the group a dealer holding all its sockets, or says in
// random why it has none. retry waits for the maps of a program just
// detached to let go of the sockets (the kernel frees them shortly after).
func (g *group) seat(retry bool) {
	if !dealInTurn {
		g.random = "turned off"
		return
	}
	d, err := deal.New()
	if err != nil {
		g.random = err.Error()
		return
	}
	for _, gs := range g.socks {
		key, err := d.Add(gs.fd)
		for deadline := time.Now().Add(time.Second); retry && errors.Is(err, unix.EBUSY) && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			key, err = d.Add(gs.fd)
		}
		if err != nil {
			d.Close()
			g.random = err.Error()
			return
		}
		gs.key = key
	}
	g.deal, g.random = d, ""
}

// dropDealer falls back to the classic program, saying why; if socks may
// not be in the kernel's order, steering ends instead.
func (g *group) dropDealer(s *supervisor, why string) {
	g.deal.Close()
	g.deal, g.random, g.dealPass, g.to = nil, why, "", nil
	s.warnRandom(g)
	if g.unordered {
		g.giveUp(s, "the classic program needs the kernel's order of the sockets, which baton lost when one left the group")
	}
}

// frozen reports whether the kernel's order of the group must not change:
// the classic program steers it, and another process's sockets follow
// baton's (a socket of baton's leaving would move one of theirs into its
// place, and one bound would come after theirs).
func (g *group) frozen() bool { return !g.off && g.deal == nil && g.foreign > 0 }

// dealFds names the dealer's descriptors under the group's dealPass.
func dealFds(fds *deal.Fds) map[string]*int {
	return map[string]*int{"prog": &fds.Prog, "state": &fds.State, "turns": &fds.Turns, "socks": &fds.Socks}
}

// backlog is the number of connections waiting in a listening socket's
// accept queue (TCP_INFO's tcpi_unacked, for a listener).
func backlog(fd int) uint32 {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0
	}
	return info.Unacked
}

// held reports whether a live worker holds gs.
func (gs *groupSocket) held() bool { return len(gs.holders) > 0 }

// free returns the socket for a new worker of slot among those no live
// worker holds: one with connections waiting (a worker that died left
// them), its slot's first; else the first free one; nil if none.
func (g *group) free(slot int) *groupSocket {
	var first, waiting *groupSocket
	for _, gs := range g.socks {
		if gs.held() || gs.theirs {
			continue
		}
		if first == nil {
			first = gs
		}
		if backlog(gs.fd) > 0 && (waiting == nil || gs.slot == slot && waiting.slot != slot) {
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
func (g *group) ofSlot(slot int) *groupSocket {
	if slot == 0 || !g.socks[0].held() {
		return g.socks[0]
	}
	for _, gs := range g.socks[1:] {
		if gs.held() && gs.slot == slot {
			return gs
		}
	}
	return nil
}

// share returns a held socket for a new worker of slot, when none is
// free and none may be bound (the upgrading baton, while its successor
// binds): its slot's, else the one with the fewest holders.
func (g *group) share(slot int) *groupSocket {
	var best *groupSocket
	for _, gs := range g.socks {
		if gs.theirs {
			continue
		}
		if gs.held() && gs.slot == slot {
			return gs
		}
		if best == nil || len(gs.holders) < len(best.holders) {
			best = gs
		}
	}
	return best
}

// program returns the classic BPF program that picks one of the sockets
// at indices to, at random.
func program(to []int) []unix.SockFilter {
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfAdOff + skfAdRandom},
		{Code: unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K, K: uint32(len(to))},
	}
	for i, idx := range to {
		if i < len(to)-1 {
			// A == i: the next instruction; else skip it.
			prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(i), Jt: 0, Jf: 1})
		}
		prog = append(prog, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: uint32(idx)})
	}
	return prog
}

// attach makes the group's program pick from the sockets at indices to:
// the dealer's in turn, or the classic one's at random.
func (g *group) attach(to []int) error {
	if g.deal != nil {
		keys := make([]uint32, len(to))
		for i, idx := range to {
			keys[i] = g.socks[idx].key
		}
		if err := g.deal.Deal(keys); err != nil {
			return err
		}
		if g.to == nil {
			if err := g.deal.Attach(g.socks[0].fd); err != nil {
				return err
			}
		}
		g.to = slices.Clone(to)
		return nil
	}
	prog := program(to)
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(g.socks[0].fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog); err != nil {
		return os.NewSyscallError("setsockopt SO_ATTACH_REUSEPORT_CBPF", err)
	}
	g.to = slices.Clone(to)
	return nil
}

// point attaches the program for to; if the dealer fails, the classic
// one; if that fails too, steering ends.
func (g *group) point(s *supervisor, to []int) {
	err := g.attach(to)
	if err != nil && g.deal != nil {
		g.dropDealer(s, err.Error())
		err = g.attach(to)
	}
	if err != nil {
		g.giveUp(s, err.Error())
	}
}

// giveUp stops steering the group, saying why: the kernel spreads
// connections by its hash over every socket, so none may stay free.
func (g *group) giveUp(s *supervisor, why string) {
	if g.off {
		return
	}
	g.off = true
	unix.SetsockoptInt(g.socks[0].fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
	g.to = nil
	s.log.Warn("balance = \"reuseport\": not steering connections: workers are signalled without waiting for their queues, and a socket is closed when its worker goes", "listener", g.name, "reason", why)
}

// check compares the group with the kernel's (see the top of this file):
// it gives up steering when baton cannot count the group or the classic
// program's order was lost, drops a socket of baton's that no longer
// listens under the dealer, takes steering up again under the dealer
// once the group is what baton holds, and notes another process's
// sockets. While another baton uses the sockets it changes nothing but
// that note.
func (g *group) check(s *supervisor) {
	if g.off && g.deal == nil {
		return // refused, or the classic program's order is lost: for good
	}
	n, err := listenersAt(g.socks[0].fd)
	if err != nil {
		if !s.batonShares() {
			g.giveUp(s, err.Error())
		}
		return
	}
	listening := make([]bool, len(g.socks))
	for i, gs := range g.socks {
		on, err := unix.GetsockoptInt(gs.fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		listening[i] = err == nil && on == 1
	}
	v := judge(n, listening)
	if s.batonShares() {
		g.note(s, v.foreign)
		return
	}
	if len(v.shut) > 0 && (g.deal == nil || slices.Contains(v.shut, 0)) {
		g.giveUp(s, fmt.Sprintf("socket %d of its SO_REUSEPORT group no longer listens (a worker shut it down)", v.shut[0]))
		return
	}
	for _, i := range v.shut {
		g.unordered = true
		g.retire(s, i)
	}
	if g.off {
		g.off, g.to = false, nil
		s.log.Info("balance = \"reuseport\": steering connections again", "listener", g.name)
	}
	g.note(s, v.foreign)
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
func (g *group) note(s *supervisor, foreign int) {
	switch {
	case foreign > 0 && g.foreign == 0:
		how := "baton's program sends them nothing"
		if g.deal == nil {
			how += ", and baton binds no socket for its workers until they have gone (workers share)"
		}
		s.log.Warn("balance = \"reuseport\": another process listens on the address (it bound it with SO_REUSEPORT)", "listener", g.name, "sockets", foreign, "steering", how)
	case foreign == 0 && g.foreign > 0:
		s.log.Info("balance = \"reuseport\": the SO_REUSEPORT group is baton's alone again", "listener", g.name)
		if to := g.to; to != nil && !s.batonShares() {
			g.to = nil // attach it, not just deal
			g.point(s, to)
		}
	}
	g.foreign = foreign
	if foreign > 0 {
		s.recheckLater()
	}
}

// recheckLater has the groups checked again in foreignRecheck, when
// nothing else may make baton look: it notices another process's
// sockets have gone.
func (s *supervisor) recheckLater() {
	if s.recheck != nil {
		return
	}
	s.recheck = time.AfterFunc(foreignRecheck, func() {
		s.post(loopCall{do: func() {
			s.recheck = nil
			s.sweep()
			s.steer()
			for _, l := range s.listeners {
				if l.group != nil && l.group.foreign > 0 {
					s.recheckLater()
				}
			}
		}})
	})
}

// listenersAt counts the TCP sockets listening where fd is bound, from
// /proc/net/tcp or tcp6, which lists listening sockets first.
func listenersAt(fd int) (int, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, os.NewSyscallError("getsockname", err)
	}
	var path, local string
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		path, local = "/proc/net/tcp", fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(a.Addr[:]), a.Port)
	case *unix.SockaddrInet6:
		var b strings.Builder
		for i := 0; i < 16; i += 4 {
			fmt.Fprintf(&b, "%08X", binary.NativeEndian.Uint32(a.Addr[i:]))
		}
		path, local = "/proc/net/tcp6", fmt.Sprintf("%s:%04X", b.String(), a.Port)
	default:
		return 0, fmt.Errorf("not a TCP socket")
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	n := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != "0A" {
			break
		}
		if fields[1] == local {
			n++
		}
	}
	return n, sc.Err()
}

// retire takes the socket at index i out of the group and closes it. The
// kernel moves the last socket into its place, and the program is pointed
// at the targets in that order first. The dealer moves the retired
// socket's queue to them; the classic program sends what would go to the
// moved socket to the retired one until the shutdown, and the kernel
// moves that queue by its hash with net.ipv4.tcp_migrate_req = 1.
func (g *group) retire(s *supervisor, i int) {
	last := len(g.socks) - 1
	gs := g.socks[i]
	g.socks[i] = g.socks[last]
	g.socks = g.socks[:last]
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
			g.point(s, to)
		}
	}
	unix.Shutdown(gs.fd, unix.SHUT_RDWR)
	unix.Close(gs.fd)
}

// pick chooses the socket of each reuseport listener of w's config for
// w (pickIn).
func (s *supervisor) pick(w lifecycle.Spawn) (map[*listener]*groupSocket, error) {
	picks := map[*listener]*groupSocket{}
	for _, c := range w.Config.Listen {
		if !perWorker(s.balance, c) {
			continue
		}
		l := s.findListener(c)
		gs, err := s.pickIn(l, w.Slot, w.Replaces)
		if err != nil {
			return nil, fmt.Errorf("supervisor: listener %q: socket for worker %d: %w", l.name, w.Slot, err)
		}
		picks[l] = gs
	}
	return picks, nil
}

// pickIn chooses l's socket for a new worker of slot, which replaces the
// worker replaces (0: none) while that one runs. Steered: the listener
// if the replaced worker holds it (docs/balancing.md: it is never
// closed, so its queue waits for a worker that accepts), else a free
// one, else one bound beside it, else (upgrading baton, frozen group) a
// shared one. Not steered, a slot's socket is shared by its old and new
// worker (ofSlot), and sweep closes another once its workers are gone.
func (s *supervisor) pickIn(l *listener, slot, replaces int) (*groupSocket, error) {
	g := l.group
	if replaces != 0 && slices.Contains(g.socks[0].holders, replaces) {
		return g.socks[0], nil
	}
	if g.off {
		if gs := g.ofSlot(slot); gs != nil {
			return gs, nil
		}
	} else if gs := g.free(slot); gs != nil {
		return gs, nil
	}
	if !g.off && (s.upgrading() || g.frozen()) {
		// The successor binds (a socket bound here would take an index
		// it counts as its own), or another process's sockets are last.
		if gs := g.share(slot); gs != nil {
			return gs, nil
		}
		return g.socks[0], nil
	}
	if g.off && s.upgrading() {
		return g.socks[0], nil
	}
	fd, err := bindBeside(l.fd)
	if err != nil {
		return nil, err
	}
	gs := &groupSocket{fd: fd}
	g.socks = append(g.socks, gs)
	if g.deal != nil {
		if gs.key, err = g.deal.Add(fd); err != nil {
			g.dropDealer(s, err.Error())
		}
	}
	wasOff := g.off
	g.check(s)
	if !wasOff && (g.off || g.frozen()) {
		// The group changed as this one was bound: under the classic
		// program another process's socket may have joined before it.
		if i := slices.Index(g.socks, gs); i >= 0 {
			g.retire(s, i)
		}
		return s.pickIn(l, slot, replaces)
	}
	return gs, nil
}

// upgrading reports whether this baton started a self-upgrade that is
// under way or handed over: its successor binds sockets, and steers.
func (s *supervisor) upgrading() bool { return s.routes.Shared && s.parent == 0 }

// batonShares reports whether another baton uses the groups' sockets (a
// self-upgrade under way, or its parent not yet exited): neither baton
// then closes one.
func (s *supervisor) batonShares() bool { return s.routes.Shared || s.oldBaton != 0 || s.parent != 0 }

// leaveFreeSockets leaves, as a self-upgrade starts, the sockets no
// worker holds to the successor's workers, as its note says.
func (s *supervisor) leaveFreeSockets() {
	for _, l := range s.listeners {
		if l.group == nil {
			continue
		}
		for _, gs := range l.group.socks {
			gs.theirs = !gs.held()
		}
	}
}

// hold records that pid, of slot, got the sockets picked for it.
func (s *supervisor) hold(picks map[*listener]*groupSocket, pid, slot int) {
	for _, gs := range picks {
		gs.holders = append(gs.holders, pid)
		gs.slot = slot
	}
	s.sweep() // a group given up as it bound one keeps no free socket
	s.steer() // one that steers again gets its program
}

// socketsOf returns the group sockets pid holds.
func (s *supervisor) socketsOf(pid int) []*groupSocket {
	var out []*groupSocket
	for _, l := range s.listeners {
		if l.group == nil {
			continue
		}
		for _, gs := range l.group.socks {
			if slices.Contains(gs.holders, pid) {
				out = append(out, gs)
			}
		}
	}
	return out
}

// steer attaches to each steered group a program sending new connections
// to the sockets of the ready workers not leaving; when there are none, of
// the live workers not leaving (at start); when there are none either,
// while some slot is still to be served, of the live workers (leaving
// ones still accept until they are signalled). Between a self-upgrade's
// start and the successor taking charge neither baton changes the
// program: the parent's stays in force, and if the upgrade fails nothing
// was sent to the successor's workers.
func (s *supervisor) steer() {
	if s.upgrading() || s.parent != 0 {
		return
	}
	for _, l := range s.listeners {
		g := l.group
		if g == nil || g.off {
			continue
		}
		to := s.targets(g, true, false)
		if len(to) == 0 {
			to = s.targets(g, false, false)
		}
		if len(to) == 0 && len(s.routes.Slots) > 0 {
			to = s.targets(g, false, true)
		}
		if len(to) == 0 || slices.Equal(to, g.to) {
			continue
		}
		g.point(s, to)
	}
}

// targets returns the indices of g's sockets held by a worker that is
// ready (or, with ready false, live) and not leaving (or, with leaving,
// whether leaving or not).
func (s *supervisor) targets(g *group, ready, leaving bool) []int {
	var to []int
	for i, gs := range g.socks {
		for _, pid := range gs.holders {
			if (leaving || !s.leaving[pid]) && (!ready || slices.Contains(s.routes.Ready, pid)) {
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
func (s *supervisor) sweep() {
	if s.batonShares() {
		return
	}
	for _, l := range s.listeners {
		g := l.group
		if g == nil {
			continue
		}
		g.check(s)
		if g.frozen() {
			continue
		}
		stranded := func(gs *groupSocket) bool { return backlog(gs.fd) > 0 && !s.refilling(g, gs.slot) }
		free := func(gs *groupSocket) bool { return !gs.held() && !gs.theirs }
		if !g.off && !slices.ContainsFunc(g.socks[1:], func(gs *groupSocket) bool { return free(gs) && stranded(gs) }) {
			continue
		}
		for i := len(g.socks) - 1; i >= 1; i-- {
			if gs := g.socks[i]; free(gs) && (g.off || backlog(gs.fd) == 0 || stranded(gs)) {
				g.retire(s, i)
			}
		}
	}
}

// refilling reports whether a worker of slot is yet to start, which will
// take a free socket of g that was its slot's.
func (s *supervisor) refilling(g *group, slot int) bool {
	if !slices.Contains(s.routes.Slots, slot) {
		return false
	}
	for _, gs := range g.socks {
		if gs.slot != slot {
			continue
		}
		for _, pid := range gs.holders {
			if !s.leaving[pid] {
				return false
			}
		}
	}
	return true
}

// steerAway leaves pid out of the programs and reports whether its
// sockets now get no new connection, so that its signal should wait for
// their queues.
func (s *supervisor) steerAway(pid int) bool {
	socks := s.socketsOf(pid)
	if len(socks) == 0 {
		return false
	}
	s.leaving[pid] = true
	s.steer()
	for _, l := range s.listeners {
		g := l.group
		if g == nil {
			continue
		}
		for i, gs := range g.socks {
			if !slices.Contains(gs.holders, pid) {
				continue
			}
			for _, other := range gs.holders {
				if !s.leaving[other] {
					return false // shared with a worker that stays
				}
			}
			if g.off || !s.handedOver && (g.to == nil || slices.Contains(g.to, i)) {
				return false
			}
		}
	}
	return true
}

// pendingSignal is a signal waiting for its worker's sockets' queues to
// empty: copies of those sockets (baton may close its own meanwhile, as
// at a stop) and the timer of the next look.
type pendingSignal struct {
	fds   []int
	timer *time.Timer
}

// signalDrained sends pid sig once its sockets' queues have been empty
// for steerSettle, or after steerWait.
func (s *supervisor) signalDrained(pid int, kill func()) {
	p := &pendingSignal{}
	for _, gs := range s.socketsOf(pid) {
		if fd, err := unix.FcntlInt(uintptr(gs.fd), unix.F_DUPFD_CLOEXEC, 0); err == nil {
			p.fds = append(p.fds, fd)
		}
	}
	s.pendingKill[pid] = p
	deadline := time.Now().Add(steerWait)
	var emptySince time.Time
	var poll func()
	poll = func() {
		if s.pendingKill[pid] != p {
			return // exited, killed, or signalled again
		}
		waiting := false
		for _, fd := range p.fds {
			waiting = waiting || backlog(fd) > 0
		}
		now := time.Now()
		switch {
		case waiting:
			emptySince = time.Time{}
		case emptySince.IsZero():
			emptySince = now
		}
		if !waiting && now.Sub(emptySince) >= steerSettle || now.After(deadline) {
			s.forget(pid)
			kill()
			return
		}
		p.timer = time.AfterFunc(steerPoll, func() { s.post(loopCall{do: poll}) })
	}
	poll()
}

// forget cancels what waits for pid (it exited, or is being killed).
func (s *supervisor) forget(pid int) {
	p := s.pendingKill[pid]
	if p == nil {
		return
	}
	if p.timer != nil {
		p.timer.Stop()
	}
	for _, fd := range p.fds {
		unix.Close(fd)
	}
	delete(s.pendingKill, pid)
}

// releaseSockets gives up what pid held, once it exited.
func (s *supervisor) releaseSockets(pid int) {
	s.forget(pid)
	delete(s.leaving, pid)
	for _, gs := range s.socketsOf(pid) {
		gs.holders = slices.DeleteFunc(gs.holders, func(p int) bool { return p == pid })
	}
	s.sweep()
	s.steer()
}

// watchParent waits, in a successor, for the parent baton to exit: the
// sockets its workers held are this one's from then on.
func (s *supervisor) watchParent(pid int) {
	s.oldBaton = pid
	gone := func() bool { return unix.Kill(pid, 0) == unix.ESRCH }
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		gone = func() bool { n, _ := unix.Poll(fds, 0); return n > 0 }
		defer func() { go func() { <-s.quit; unix.Close(fd) }() }()
	}
	// Told through the loop, after the Machine's first Routes.
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for !gone() {
			select {
			case <-s.quit:
				return
			case <-tick.C:
			}
		}
		s.post(loopCall{do: func() { s.parentExited(pid) }})
	}()
}

// parentExited frees the sockets the parent's workers held.
func (s *supervisor) parentExited(pid int) {
	if s.oldBaton != pid {
		return
	}
	s.oldBaton = 0
	for _, l := range s.listeners {
		if l.group == nil {
			continue
		}
		for _, gs := range l.group.socks {
			gs.theirs = false
		}
		l.group.check(s)
	}
	s.sweep()
	s.steer()
}
