package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/lifecycle"
	"github.com/batonhq/baton/internal/steer"
)

// How connections reach the workers (worker.balance; docs/balancing.md).
// shared: every worker accepts on the listener itself. reuseport: each
// worker has its own SO_REUSEPORT socket per TCP listener, of a group
// baton holds and steers (internal/steer decides which socket and when a
// worker may be signalled; this file carries it out). round-robin: baton
// accepts on the stream listeners and passes each connection to the next
// ready worker (roundrobin).

// migrateReqPath says whether the kernel moves the queue of a closed
// SO_REUSEPORT socket to its siblings (a variable for tests).
var migrateReqPath = "/proc/sys/net/ipv4/tcp_migrate_req"

// dealInTurn: groups get a dealer when the kernel lets baton load one (a
// variable for tests of the classic program).
var dealInTurn = true

// perWorker reports whether l gets a socket per worker under mode.
func perWorker(mode string, l config.Listener) bool {
	return mode == config.BalanceReusePort && strings.HasPrefix(l.Network, "tcp")
}

// passedOn reports whether l's connections are passed by baton under
// mode.
func passedOn(mode string, l config.Listener) bool {
	return mode == config.BalanceRoundRobin && l.Stream()
}

// chooseBalance sets the mode in force: worker.balance, or with auto
// what lifecycle.ChooseBalance makes of the listeners open so far (from
// systemd or its fd store) and the parent's mode; said in one line. A
// self-upgrade's parent sent its mode in note.
func (s *supervisor) chooseBalance(cfg *config.Config, note *upgradeNote) {
	s.balance, s.auto = cfg.Worker.Balance, ""
	if s.balance != config.BalanceAuto {
		return
	}
	parent := ""
	if note != nil {
		parent = note.balance()
	}
	var socks []lifecycle.BalanceSocket
	for _, c := range cfg.Listen {
		if !c.Stream() {
			continue
		}
		b := lifecycle.BalanceSocket{Name: c.Name, TCP: strings.HasPrefix(c.Network, "tcp")}
		if l := s.findListener(c); l != nil && parent == "" {
			b.From = "fd store"
			if l.inherited {
				b.From = "systemd"
			}
			b.Kind, b.ReusePort, b.Beside = probeSocket(l.fd)
		}
		socks = append(socks, b)
	}
	s.balance, s.auto = lifecycle.ChooseBalance(socks, parent)
	level := slog.LevelInfo
	if s.balance == config.BalanceShared && parent == "" {
		level = slog.LevelWarn // uneven: say so, with what allows better
	}
	s.log.Log(context.Background(), level, "balance: auto chose "+s.balance, "why", s.auto)
}

// probeSocket finds out what ChooseBalance needs to know of an open
// stream socket: its kind, whether SO_REUSEPORT is set on it, and if so,
// why no socket can be bound beside it ("" if one can).
func probeSocket(fd int) (kind string, reusePort bool, beside string) {
	domain, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	proto, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	switch {
	case domain == unix.AF_UNIX:
		return "unix", false, ""
	case domain != unix.AF_INET && domain != unix.AF_INET6:
		return "other", false, ""
	case proto == unix.IPPROTO_MPTCP:
		kind = "mptcp"
	case proto == unix.IPPROTO_TCP:
		kind = "tcp"
	default:
		return "other", false, ""
	}
	on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT)
	if err != nil || on == 0 || kind != "tcp" {
		return kind, on == 1, ""
	}
	// Bound, not listening: it never joins the group, yet the kernel
	// checks at bind whether it may (the same user).
	nfd, err := steer.BindNear(fd)
	if err != nil {
		return kind, true, err.Error()
	}
	unix.Close(nfd)
	return kind, true, ""
}

// openBalance prepares cfg's listeners for its balancing mode: with
// reuseport each TCP listener must allow siblings, and is the first
// socket of its group; with round-robin baton accepts on each stream
// listener.
func (s *supervisor) openBalance(cfg *config.Config) error {
	for _, c := range cfg.Listen {
		l := s.findListener(c)
		switch {
		case perWorker(s.balance, c):
			on, err := unix.GetsockoptInt(l.fd, unix.SOL_SOCKET, unix.SO_REUSEPORT)
			if err != nil {
				return fmt.Errorf("supervisor: listener %q: %w", c.Name, os.NewSyscallError("getsockopt SO_REUSEPORT", err))
			}
			if on == 0 {
				why := "it was bound without SO_REUSEPORT (restart baton to change worker.balance)"
				if l.inherited {
					why = "systemd bound it without SO_REUSEPORT: set ReusePort=yes in its .socket unit"
				}
				return fmt.Errorf("supervisor: listener %q: balance = %q needs a socket per worker, but %s", c.Name, config.BalanceReusePort, why)
			}
			if l.group == nil {
				// A successor leaves its parent's program be.
				l.group = steer.NewGroup(l.name, l.fd, s.parent == 0, dealInTurn)
				s.groups.Add(l.group)
			}
		case passedOn(s.balance, c):
			if err := s.rr.Listen(l.fd, l.fd, c.Name); err != nil {
				return fmt.Errorf("supervisor: listener %q: %w", c.Name, err)
			}
		}
	}
	return nil
}

// Route carries out the Machine's Routes: round-robin passes connections
// to the ready workers only; reuseport steers them to the ready workers'
// sockets.
func (s *supervisor) Route(r lifecycle.Routes) {
	if s.rr != nil {
		s.rr.Route(r.Ready)
	}
	s.groups.Route(r)
}

// workerExited tells the balancer a worker is gone.
func (s *supervisor) workerExited(pid int) {
	if s.rr != nil {
		s.rr.Exited(pid)
	}
	s.forget(pid)
	s.groups.Release(pid)
	delete(s.drains, pid)
}

// drainsAcceptedKey is the notify field (also a line on the readiness
// pipe) with which a worker says that, told to stop, it serves every
// connection it has accepted, read from or not (the drain package's
// DrainsAcceptedField; docs/protocols.md): its signal then does not wait
// for it to read them.
const drainsAcceptedKey = "X_BATON_DRAINS_ACCEPTED"

// DrainsAccepted records that the worker pid said drainsAcceptedKey (the
// Machine, or its readiness pipe), if it holds sockets of the groups
// (reuseport): the only workers whose signal may wait, and forgotten
// when they exit.
func (s *supervisor) DrainsAccepted(pid int) {
	if len(s.groups.Sockets(pid)) > 0 {
		s.drains[pid] = true
	}
}

// steerEnv is what the groups act on: the kernel, and the loop's timer.
type steerEnv struct {
	steer.Kernel
	s *supervisor
}

// RecheckLater has the groups checked again in steer.RecheckEvery, when
// nothing else may make baton look: it notices another process's
// sockets have gone.
func (e steerEnv) RecheckLater() {
	s := e.s
	if s.recheck != nil {
		return
	}
	s.recheck = time.AfterFunc(steer.RecheckEvery, func() {
		s.post(loopCall{do: func() {
			s.recheck = nil
			if s.groups.Recheck() {
				e.RecheckLater()
			}
		}})
	})
}

// pick chooses the socket of each reuseport listener of w's config for
// w (steer.Groups.Pick).
func (s *supervisor) pick(w lifecycle.Spawn) (map[*listener]*steer.Socket, error) {
	picks := map[*listener]*steer.Socket{}
	for _, c := range w.Config.Listen {
		if !perWorker(s.balance, c) {
			continue
		}
		l := s.findListener(c)
		gs, err := s.groups.Pick(l.group, w.Slot, w.Replaces)
		if err != nil {
			return nil, fmt.Errorf("supervisor: listener %q: socket for worker %d: %w", l.name, w.Slot, err)
		}
		picks[l] = gs
	}
	return picks, nil
}

// hold records that pid, of slot, got the sockets picked for it.
func (s *supervisor) hold(picks map[*listener]*steer.Socket, pid, slot int) {
	s.groups.Hold(slices.Collect(maps.Values(picks)), pid, slot)
}

// pendingSignal is a signal waiting for its worker's sockets' queues to
// empty, and then for the worker to begin serving what it accepted
// (steer.Wait): copies of those sockets (baton may close its own
// meanwhile, as at a stop), where they are bound, and the timer of the
// next look.
type pendingSignal struct {
	fds   []int
	ports []steer.Port
	timer *time.Timer
}

// signalDrained calls kill once pid's sockets' queues have been empty
// long enough and pid holds no connection it has read nothing of (unless
// it said it serves those), or waited long enough (steer.Wait). The look
// at pid's connections runs off the loop: it reads the worker's
// descriptors, however many. The first time it holds the signal, baton
// says so.
func (s *supervisor) signalDrained(pid int, kill func()) {
	p := &pendingSignal{}
	for _, gs := range s.groups.Sockets(pid) {
		if fd, err := unix.FcntlInt(uintptr(gs.FD), unix.F_DUPFD_CLOEXEC, 0); err == nil {
			p.fds = append(p.fds, fd)
		}
		if port, err := steer.PortOf(gs.FD); err == nil && !slices.Contains(p.ports, port) {
			p.ports = append(p.ports, port)
		}
	}
	s.pendingKill[pid] = p
	started := time.Now()
	wait := steer.NewWait(started)
	signal := func() {
		s.forget(pid)
		kill()
	}
	var poll func()
	again := func() {
		p.timer = time.AfterFunc(steer.SignalPoll, func() { s.post(loopCall{do: poll}) })
	}
	// settled looks at the queues: false, and the next look is due, if
	// they have not stayed empty long enough; the wait being over
	// signals.
	settled := func() bool {
		queued := false
		for _, fd := range p.fds {
			queued = queued || steer.Kernel{}.Queued(fd) > 0
		}
		now := time.Now()
		switch {
		case wait.Over(now):
			signal()
		case !wait.Settled(now, queued):
			again()
		default:
			return true
		}
		return false
	}
	held := false
	poll = func() {
		if s.pendingKill[pid] != p || !settled() {
			return // exited, killed, or signalled again; or not yet
		}
		if s.drains[pid] {
			signal()
			return
		}
		go func() {
			// A connection that has received nothing counts while it is
			// younger than the whole wait.
			unserved, err := steer.Kernel{}.Unserved(pid, p.ports, steer.SignalWait)
			s.post(loopCall{do: func() {
				switch {
				case s.pendingKill[pid] != p || !settled():
				case err != nil:
					s.warnUnserved(err)
					signal()
				case unserved:
					if !held {
						held = true
						s.log.Info("the worker has accepted connections it has not read: its SIGTERM waits for it to read them", "pid", pid, "at_most", steer.SignalWait-time.Since(started))
					}
					again()
				default:
					signal()
				}
			}})
		}()
	}
	poll()
}

// warnUnserved says, once, that baton cannot see whether a worker it is
// about to stop has accepted connections it has not read yet (sock_diag
// refused, as by a sandbox without AF_NETLINK, or the worker's
// descriptors unreadable); the signal then goes without that look.
func (s *supervisor) warnUnserved(err error) {
	if s.unservedBlind {
		return
	}
	s.unservedBlind = true
	s.log.Warn("cannot see a worker's unread connections before stopping it; it is signalled once its socket's queue is empty", "balance", "reuseport", "err", err)
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

// watchParent waits, in a successor, for the parent baton to exit: the
// sockets its workers held are this one's from then on.
func (s *supervisor) watchParent(pid int) {
	s.groups.OldBaton = pid
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
		s.post(loopCall{do: func() {
			if s.groups.OldBaton == pid {
				s.groups.ParentExited()
			}
		}})
	}()
}
