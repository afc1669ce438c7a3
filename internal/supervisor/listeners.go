package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/spawn"
	"github.com/batonhq/baton/internal/steer"
	"github.com/batonhq/baton/internal/systemd"
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
	// stored is set once the socket is in systemd's fd store.
	stored bool
	// unlink is the socket file to remove when closing, for unix sockets
	// baton bound itself.
	unlink string
	// passKey names it for the upgrader, which holds a copy for the next
	// supervisor; "" when not registered.
	passKey string
	// group is its SO_REUSEPORT group (worker.balance = "reuseport"),
	// whose first socket is fd; nil in the other modes.
	group *steer.Group
}

// extra returns the sockets of l's group besides l's own.
func (l *listener) extra() []*steer.Socket {
	if l.group == nil {
		return nil
	}
	return l.group.Socks[1:]
}

// close closes baton's descriptors and, unless keepPath (another
// supervisor shares the socket), removes its socket file.
func (l *listener) close(keepPath bool) {
	for _, gs := range l.extra() {
		unix.Close(gs.FD)
	}
	if l.group != nil && l.group.Deal != nil {
		l.group.Deal.Close()
	}
	unix.Close(l.fd)
	if l.unlink != "" && !keepPath {
		os.Remove(l.unlink)
	}
}

// adoptInherited makes listeners of the sockets systemd passed. Each one
// from a .socket unit must be claimed by a configured listener of the same
// name and kind: an unclaimed one would be a port accepting connections
// nobody serves. Sockets baton itself kept in systemd's fd store (named
// systemd.FDStorePrefix+name) are taken back when the config still has a
// listener of that name and address, and dropped from the store otherwise.
func adoptInherited(cfg []config.Listener, inherited []systemd.Socket, log *slog.Logger) ([]*listener, error) {
	byName := map[string]config.Listener{}
	for _, l := range cfg {
		byName[l.Name] = l
	}
	var out []*listener
	var unclaimed []string
	var err error
	claimed := map[string]bool{}
	for _, s := range inherited {
		if name, ok := strings.CutPrefix(s.Name, systemd.FDStorePrefix); ok {
			l, found := byName[name]
			if !found || claimed[name] || !sameAddress(s.Fd, l) {
				log.Info("dropping a socket from systemd's fd store that the config no longer has", "name", name)
				unix.Close(s.Fd)
				if rerr := systemd.RemoveStoredFD(name); rerr != nil {
					log.Warn("cannot remove socket from systemd's fd store", "name", name, "err", rerr)
				}
				continue
			}
			claimed[name] = true
			out = append(out, &listener{name: name, network: l.Network, addr: l.Addr, fd: s.Fd, stored: true})
			continue
		}
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
			l.close(false)
		}
		return nil, err
	}
	return out, nil
}

// sameAddress reports whether the socket fd is bound where l says: same
// kind, and for TCP and UDP the same port and (unless l's host is empty or
// unspecified) the same IP; for unix sockets the same path.
func sameAddress(fd int, l config.Listener) bool {
	if checkType(fd, l) != nil {
		return false
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false
	}
	if l.Network == "unix" {
		u, ok := sa.(*unix.SockaddrUnix)
		return ok && u.Name == l.Addr
	}
	host, port, err := net.SplitHostPort(l.Addr)
	if err != nil {
		return false
	}
	var ip net.IP
	var got int
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		ip, got = net.IP(a.Addr[:]), a.Port
	case *unix.SockaddrInet6:
		ip, got = net.IP(a.Addr[:]), a.Port
	default:
		return false
	}
	if strconv.Itoa(got) != port {
		return false
	}
	want := net.ParseIP(host)
	return host == "" || want == nil && host == "localhost" && ip.IsLoopback() || want != nil && (want.IsUnspecified() && ip.IsUnspecified() || want.Equal(ip))
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
// before any worker exists; reusePort: with SO_REUSEPORT, so that sockets
// for further workers can be bound beside it.
func bind(ctx context.Context, l config.Listener, reusePort bool) (listener, error) {
	var (
		lc     net.ListenConfig
		conn   interface{ Close() error }
		unlink string
		err    error
	)
	if reusePort {
		// Plain TCP, like the sockets bound beside it: Go makes an MPTCP
		// listener where the kernel has it, and the kernel attaches no
		// reuseport program to one.
		lc.SetMultipathTCP(false)
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			})
			return errors.Join(err, os.NewSyscallError("setsockopt SO_REUSEPORT", serr))
		}
	}
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
	fd, err := spawn.DupFd(conn.(syscall.Conn))
	conn.Close()
	if err == nil {
		if serr := unix.SetNonblock(fd, false); serr != nil {
			unix.Close(fd)
			err = os.NewSyscallError("fcntl", serr)
		}
	}
	if err == nil && reusePort {
		if n, cerr := steer.ListenersAt(fd); cerr == nil && n > 1 {
			// Another process of this user listens there with
			// SO_REUSEPORT: the listener joined its group, which baton
			// would steer. Refused, as it would be without SO_REUSEPORT.
			unix.Close(fd)
			err = fmt.Errorf("listen %s %s: %w (another process listens there with SO_REUSEPORT)", l.Network, l.Addr, unix.EADDRINUSE)
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

func closeListeners(ls []*listener, keepPaths bool) {
	for _, l := range ls {
		l.close(keepPaths)
	}
}
