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

// listener is a socket the supervisor holds for the whole life of the
// service, as a raw descriptor: never wrapped in a net.Listener, so its
// blocking mode is never changed behind the workers' backs.
type listener struct {
	name string
	fd   int
	// unlink is the socket file to remove at the end, for unix sockets
	// baton bound itself.
	unlink string
}

// openListeners takes each configured listener from the sockets systemd
// passed (matched by name) or binds it, in config order. A passed socket
// that no listener claims is an error: silently ignoring it would leave a
// port that accepts connections nobody serves.
func openListeners(ctx context.Context, cfg []config.Listener, inherited []systemd.Socket) (out []listener, err error) {
	defer func() {
		if err != nil {
			closeListeners(out)
		}
	}()
	byName := map[string]systemd.Socket{}
	for _, s := range inherited {
		byName[s.Name] = s
	}
	for _, l := range cfg {
		if s, ok := byName[l.Name]; ok {
			delete(byName, l.Name)
			if err := checkType(s.Fd, l); err != nil {
				unix.Close(s.Fd)
				return out, err
			}
			out = append(out, listener{name: l.Name, fd: s.Fd})
			continue
		}
		ln, err := bind(ctx, l)
		if err != nil {
			return out, err
		}
		out = append(out, ln)
	}
	if len(byName) > 0 {
		var names []string
		for _, s := range inherited {
			if _, ok := byName[s.Name]; ok {
				names = append(names, fmt.Sprintf("%q", s.Name))
				unix.Close(s.Fd)
			}
		}
		return out, fmt.Errorf("supervisor: systemd passed socket %s that no listener claims (add a [[listen]] with that name, or set FileDescriptorName= to one)", strings.Join(names, ", "))
	}
	return out, nil
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
	return listener{name: l.Name, fd: fd, unlink: unlink}, nil
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

func closeListeners(ls []listener) {
	for _, l := range ls {
		unix.Close(l.fd)
		if l.unlink != "" {
			os.Remove(l.unlink)
		}
	}
}
