package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/config"
	"github.com/batonhq/baton/handoff"
	"github.com/batonhq/baton/systemd"
)

// listener is a socket the supervisor holds, as a raw descriptor: never
// wrapped in a net.Listener, so its blocking mode is never changed behind
// the workers' backs. A listener stays open while a generation uses it.
type listener struct {
	name    string // as configured (or as systemd named it)
	network string // as configured; empty for a socket from systemd
	addr    string
	fd      int
	// inherited is set for a socket passed by systemd: it is matched by
	// name alone and never closed before baton exits (systemd would not
	// pass it again).
	inherited bool
	// unlink is the socket file to remove when closing, for unix sockets
	// baton bound itself.
	unlink string
}

func (l *listener) close() {
	unix.Close(l.fd)
	if l.unlink != "" {
		os.Remove(l.unlink)
	}
}

// adoptInherited makes listeners of the sockets systemd passed. Each must
// be claimed by a configured listener of the same name and kind: an
// unclaimed one would be a port accepting connections nobody serves.
func adoptInherited(cfg []config.Listener, inherited []systemd.Socket) ([]*listener, error) {
	byName := map[string]config.Listener{}
	for _, l := range cfg {
		byName[l.Name] = l
	}
	var out []*listener
	var unclaimed []string
	var err error
	claimed := map[string]bool{}
	for _, s := range inherited {
		l, ok := byName[s.Name]
		switch {
		case !ok:
			unclaimed = append(unclaimed, fmt.Sprintf("%q", s.Name))
		case claimed[s.Name] && err == nil:
			// Two ListenStream= in one .socket unit share its name; only
			// one could ever be handed to the workers.
			err = fmt.Errorf("supervisor: systemd passed several sockets named %q: give each its own FileDescriptorName= (a .socket unit per address) and a [[listen]] each", s.Name)
		case err == nil:
			err = checkType(s.Fd, l)
		}
		claimed[s.Name] = true
		out = append(out, &listener{name: s.Name, fd: s.Fd, inherited: true})
	}
	if err == nil && len(unclaimed) > 0 {
		err = fmt.Errorf("supervisor: systemd passed socket %s that no listener claims (add a [[listen]] with that name, or set FileDescriptorName= to one)", strings.Join(unclaimed, ", "))
	}
	if err != nil {
		for _, l := range out {
			l.close()
		}
		return nil, err
	}
	return out, nil
}

// listenersFor returns the listeners for cfg, in its order: a socket from
// systemd of the same name, an open one of the same address, or a newly
// bound one.
func (s *supervisor) listenersFor(cfg *config.Config) ([]*listener, error) {
	out := make([]*listener, 0, len(cfg.Listen))
	var bound []*listener
	for _, c := range cfg.Listen {
		l := s.findListener(c)
		if l == nil {
			nl, err := bind(context.Background(), c)
			if err != nil {
				for _, b := range bound {
					b.close()
				}
				return nil, err
			}
			l = &nl
			bound = append(bound, l)
		}
		out = append(out, l)
	}
	s.listeners = append(s.listeners, bound...)
	return out, nil
}

func (s *supervisor) findListener(c config.Listener) *listener {
	for _, l := range s.listeners {
		if l.inherited && l.name == c.Name {
			return l
		}
	}
	for _, l := range s.listeners {
		if !l.inherited && l.network == c.Network && l.addr == c.Addr {
			return l
		}
	}
	return nil
}

// releaseListeners closes the self-bound listeners that no generation uses
// any more (a listener removed from the config, once the generations that
// used it have drained).
func (s *supervisor) releaseListeners() {
	used := map[*listener]bool{}
	for _, g := range s.generations() {
		for _, l := range g.ls {
			used[l] = true
		}
	}
	kept := s.listeners[:0]
	for _, l := range s.listeners {
		if used[l] || l.inherited {
			kept = append(kept, l)
			continue
		}
		s.log.Info("closing listener no generation uses", "name", l.name, "address", l.network+"://"+l.addr)
		l.close()
	}
	clear(s.listeners[len(kept):])
	s.listeners = kept
}

// checkType refuses a passed socket whose kind differs from the config's.
func checkType(fd int, l config.Listener) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("supervisor: listener %q: socket from systemd: %w", l.Name, os.NewSyscallError("getsockopt SO_TYPE", err))
	}
	want := unix.SOCK_STREAM
	if !l.Stream() {
		want = unix.SOCK_DGRAM
	}
	if typ != want {
		return fmt.Errorf("supervisor: listener %q: systemd passed a socket of another type than %s", l.Name, l.Address)
	}
	return nil
}

// bind creates the socket with the standard library, keeps a duplicate of
// its descriptor and makes it blocking, as systemd would hand it over,
// before any worker exists.
func bind(ctx context.Context, l config.Listener) (listener, error) {
	var (
		lc     net.ListenConfig
		conn   interface{ Close() error }
		unlink string
		err    error
	)
	switch {
	case l.Network == "unix":
		if err := removeStaleSocket(l.Addr); err != nil {
			return listener{}, fmt.Errorf("supervisor: listener %q: %w", l.Name, err)
		}
		var ul net.Listener
		ul, err = lc.Listen(ctx, "unix", l.Addr)
		if err == nil {
			ul.(*net.UnixListener).SetUnlinkOnClose(false)
			conn, unlink = ul, l.Addr
		}
	case l.Stream():
		conn, err = lc.Listen(ctx, l.Network, l.Addr)
	default:
		conn, err = lc.ListenPacket(ctx, l.Network, l.Addr)
	}
	if err != nil {
		return listener{}, fmt.Errorf("supervisor: listener %q: %w", l.Name, err)
	}
	fd, err := handoff.DupFd(conn.(syscall.Conn))
	conn.Close()
	if err == nil {
		if serr := unix.SetNonblock(fd, false); serr != nil {
			unix.Close(fd)
			err = os.NewSyscallError("fcntl", serr)
		}
	}
	if err != nil {
		if unlink != "" {
			os.Remove(unlink)
		}
		return listener{}, fmt.Errorf("supervisor: listener %q: %w", l.Name, err)
	}
	return listener{name: l.Name, network: l.Network, addr: l.Addr, fd: fd, unlink: unlink}, nil
}

// removeStaleSocket removes a socket file left by a process that is gone,
// and refuses to touch one that still answers or a file that is no socket.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("%s is in use by another process", path)
	}
	return os.Remove(path)
}

func closeListeners(ls []*listener) {
	for _, l := range ls {
		l.close()
	}
}
