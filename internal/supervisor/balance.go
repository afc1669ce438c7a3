package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/lifecycle"
)

// How connections reach the workers (worker.balance; docs/balancing.md).
// shared: every worker accepts on the listener itself. reuseport: each
// slot has its own SO_REUSEPORT socket per TCP listener, bound beside the
// listener (slot 0's is the listener) and held by baton, so a slot's next
// worker inherits it. round-robin: baton accepts on the stream listeners
// and passes each connection to the next ready worker (roundrobin).

// migrateReqPath says whether the kernel moves the queue of a closed
// SO_REUSEPORT socket to its siblings (a variable for tests).
var migrateReqPath = "/proc/sys/net/ipv4/tcp_migrate_req"

// perSlot reports whether l gets a socket per slot.
func perSlot(cfg *config.Config, l config.Listener) bool {
	return cfg.Worker.Balance == config.BalanceReusePort && strings.HasPrefix(l.Network, "tcp")
}

// passedOn reports whether l's connections are passed by baton.
func passedOn(cfg *config.Config, l config.Listener) bool {
	return cfg.Worker.Balance == config.BalanceRoundRobin && l.Stream()
}

// slotSocket is a listener's own socket for one slot (reuseport).
type slotSocket struct {
	fd      int
	passKey string // its name for the upgrader, "" if not registered
}

// openBalance prepares cfg's listeners for its balancing mode: with
// reuseport each TCP listener must allow siblings; with round-robin baton
// accepts on each stream listener.
func (s *supervisor) openBalance(cfg *config.Config) error {
	for _, c := range cfg.Listen {
		l := s.findListener(c)
		switch {
		case perSlot(cfg, c):
			on, err := unix.GetsockoptInt(l.fd, unix.SOL_SOCKET, unix.SO_REUSEPORT)
			if err != nil {
				return fmt.Errorf("supervisor: listener %q: %w", c.Name, os.NewSyscallError("getsockopt SO_REUSEPORT", err))
			}
			if on == 0 {
				why := "it was bound without SO_REUSEPORT (restart baton to change worker.balance)"
				if l.inherited {
					why = "systemd bound it without SO_REUSEPORT: set ReusePort=yes in its .socket unit"
				}
				return fmt.Errorf("supervisor: listener %q: balance = %q needs a socket per slot, but %s", c.Name, config.BalanceReusePort, why)
			}
			s.warnMigrate()
		case passedOn(cfg, c):
			if err := s.rr.Listen(l.fd, l.fd, c.Name); err != nil {
				return fmt.Errorf("supervisor: listener %q: %w", c.Name, err)
			}
		}
	}
	return nil
}

// warnMigrate warns, once, that closing a slot's socket resets the
// connections waiting in its queue.
func (s *supervisor) warnMigrate() {
	if s.warnedMigrate {
		return
	}
	s.warnedMigrate = true
	b, err := os.ReadFile(migrateReqPath)
	if err != nil || strings.TrimSpace(string(b)) != "0" {
		return
	}
	s.log.Warn("net.ipv4.tcp_migrate_req is 0: when a slot goes (a scale down, a reload to fewer workers) the connections waiting in its socket's queue are reset; set it to 1 so the kernel moves them to the other slots",
		"balance", config.BalanceReusePort)
}

// slotFd returns the socket of l for slot, binding it beside l the first
// time.
func (s *supervisor) slotFd(l *listener, slot int) (int, error) {
	if slot == 0 {
		return l.fd, nil
	}
	if ss := l.slots[slot]; ss != nil {
		return ss.fd, nil
	}
	fd, err := bindBeside(l.fd)
	if err != nil {
		return -1, fmt.Errorf("supervisor: listener %q: socket for slot %d: %w", l.name, slot, err)
	}
	if l.slots == nil {
		l.slots = map[int]*slotSocket{}
	}
	l.slots[slot] = &slotSocket{fd: fd}
	return fd, nil
}

// bindBeside binds a new SO_REUSEPORT socket where fd is bound, with its
// options, and makes it listen: the kernel then spreads new connections
// over both.
func bindBeside(fd int) (int, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return -1, os.NewSyscallError("getsockname", err)
	}
	family := unix.AF_INET
	if _, ok := sa.(*unix.SockaddrInet6); ok {
		family = unix.AF_INET6
	}
	nfd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	opt := func(level, name int) error {
		v := 1
		if level == unix.IPPROTO_IPV6 {
			if v, err = unix.GetsockoptInt(fd, level, name); err != nil {
				return os.NewSyscallError("getsockopt", err)
			}
		}
		return os.NewSyscallError("setsockopt", unix.SetsockoptInt(nfd, level, name, v))
	}
	err = errors.Join(opt(unix.SOL_SOCKET, unix.SO_REUSEADDR), opt(unix.SOL_SOCKET, unix.SO_REUSEPORT))
	if err == nil && family == unix.AF_INET6 {
		err = opt(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
	}
	if err == nil {
		if err = unix.Bind(nfd, sa); errors.Is(err, unix.EADDRINUSE) {
			err = fmt.Errorf("%w (a socket per slot must be bound by the same user as the listener: run baton as the user systemd binds the .socket as)", os.NewSyscallError("bind", err))
		} else if err != nil {
			err = os.NewSyscallError("bind", err)
		}
	}
	if err == nil {
		err = os.NewSyscallError("listen", unix.Listen(nfd, listenBacklog()))
	}
	if err != nil {
		unix.Close(nfd)
		return -1, err
	}
	return nfd, nil
}

// listenBacklog is the kernel's limit, as Go's own listeners use it.
func listenBacklog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err == nil {
		var n int
		if _, err := fmt.Sscan(string(b), &n); err == nil && n > 0 {
			return n
		}
	}
	return unix.SOMAXCONN
}

// closeSlots closes l's slot sockets (not its own) beyond keep; shut:
// shut them down first, so the kernel stops sending them connections at
// once, though a draining worker still holds a copy.
func (l *listener) closeSlots(keep map[int]bool, shut bool) {
	for slot, ss := range l.slots {
		if keep[slot] {
			continue
		}
		if shut {
			unix.Shutdown(ss.fd, unix.SHUT_RD)
		}
		unix.Close(ss.fd)
		delete(l.slots, slot)
	}
}

// Route carries out the Machine's Routes: round-robin passes connections
// to the ready workers only; with reuseport the sockets of slots no
// worker holds any more are closed, unless another baton shares them.
func (s *supervisor) Route(r lifecycle.Routes) {
	if s.rr != nil {
		s.rr.Route(r.Ready)
	}
	if r.Shared {
		return
	}
	keep := map[int]bool{}
	for _, slot := range r.Slots {
		keep[slot] = true
	}
	for _, l := range s.listeners {
		if len(l.slots) > 0 {
			l.closeSlots(keep, true)
		}
	}
}

// workerExited tells the balancer a worker is gone.
func (s *supervisor) workerExited(pid int) {
	if s.rr != nil {
		s.rr.Exited(pid)
	}
}
