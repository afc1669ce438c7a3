package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/lifecycle"
)

// How connections reach the workers (worker.balance; docs/balancing.md).
// shared: every worker accepts on the listener itself. reuseport: each
// worker has its own SO_REUSEPORT socket per TCP listener, of a group
// baton holds and steers (steer.go). round-robin: baton accepts on the
// stream listeners and passes each connection to the next ready worker
// (roundrobin).

// migrateReqPath says whether the kernel moves the queue of a closed
// SO_REUSEPORT socket to its siblings (a variable for tests).
var migrateReqPath = "/proc/sys/net/ipv4/tcp_migrate_req"

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
	nfd, err := bindNear(fd)
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
				l.group = newGroup(l.name, l.fd, s.parent == 0)
				s.warnRandom(l.group)
				l.group.check(s)
			}
		case passedOn(s.balance, c):
			if err := s.rr.Listen(l.fd, l.fd, c.Name); err != nil {
				return fmt.Errorf("supervisor: listener %q: %w", c.Name, err)
			}
		}
	}
	return nil
}

// warnRandom warns when g has no dealer: the classic program spreads
// connections at random.
func (s *supervisor) warnRandom(g *group) {
	if g.deal != nil {
		return
	}
	s.log.Warn("balance = \"reuseport\": connections are spread at random, not in turn (dealing them in turn takes an eBPF program, which needs CAP_BPF)", "listener", g.name, "reason", g.random)
	s.warnMigrate()
}

// warnMigrate warns, once, that retiring a socket resets the connections
// waiting in its queue (the classic program does not move them).
func (s *supervisor) warnMigrate() {
	if s.warnedMigrate {
		return
	}
	s.warnedMigrate = true
	b, err := os.ReadFile(migrateReqPath)
	if err != nil || strings.TrimSpace(string(b)) != "0" {
		return
	}
	s.log.Warn("net.ipv4.tcp_migrate_req is 0: when baton closes a worker's socket with connections waiting (its worker died and none replaces it) they are reset; set it to 1 so the kernel moves them to the other workers' sockets",
		"balance", config.BalanceReusePort)
}

// bindBeside binds a new SO_REUSEPORT socket where fd is bound, with its
// options, and makes it listen: the kernel then spreads new connections
// over both.
func bindBeside(fd int) (int, error) {
	nfd, err := bindNear(fd)
	if err != nil {
		return -1, err
	}
	if err := unix.Listen(nfd, listenBacklog()); err != nil {
		unix.Close(nfd)
		return -1, os.NewSyscallError("listen", err)
	}
	return nfd, nil
}

// bindNear binds, without listening, a new SO_REUSEPORT socket where fd
// is bound, with its options.
func bindNear(fd int) (int, error) {
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
			err = fmt.Errorf("%w (a socket per worker must be bound by the same user as the listener: run baton as the user systemd binds the .socket as)", os.NewSyscallError("bind", err))
		} else if err != nil {
			err = os.NewSyscallError("bind", err)
		}
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

// Route carries out the Machine's Routes: round-robin passes connections
// to the ready workers only; reuseport steers them to the ready workers'
// sockets.
func (s *supervisor) Route(r lifecycle.Routes) {
	if s.rr != nil {
		s.rr.Route(r.Ready)
	}
	wasShared := s.routes.Shared
	s.routes = r
	if wasShared && !r.Shared && s.oldBaton == 0 {
		// A self-upgrade failed: the sockets left to the successor are
		// this baton's again, and its program may have been replaced.
		for _, l := range s.listeners {
			if l.group == nil {
				continue
			}
			l.group.to = nil
			for _, gs := range l.group.socks {
				gs.theirs = false
			}
		}
	}
	s.sweep()
	s.steer()
}

// workerExited tells the balancer a worker is gone.
func (s *supervisor) workerExited(pid int) {
	if s.rr != nil {
		s.rr.Exited(pid)
	}
	s.releaseSockets(pid)
}
