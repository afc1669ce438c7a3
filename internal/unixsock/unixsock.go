package unixsock

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// MaxPath is the longest path a unix socket can be bound to (sun_path
// holds 108 bytes, one of them the terminating NUL).
const MaxPath = len(unix.RawSockaddrUnix{}.Path) - 1

// Mode is the mode of the socket files made here: owner only.
const Mode = 0o600

// Listen binds a stream socket at path, mode Mode, and listens on it.
// Closing the listener does not remove the file.
func Listen(path string) (*net.UnixListener, error) {
	f, err := bind(unix.SOCK_STREAM, path, nil)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := listen(f); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("unixsock: listen on %s: %w", path, err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("unixsock: listen on %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

// ListenPacket binds a datagram socket at path, mode Mode. setup, if not
// nil, is called with its descriptor before the bind (to set options that
// must hold for the first datagram).
func ListenPacket(path string, setup func(fd int) error) (*net.UnixConn, error) {
	f, err := bind(unix.SOCK_DGRAM, path, setup)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("unixsock: bind %s: %w", path, err)
	}
	return c.(*net.UnixConn), nil
}

func bind(typ int, path string, setup func(fd int) error) (*os.File, error) {
	if len(path) > MaxPath {
		return nil, fmt.Errorf("unixsock: %s is %d bytes long, more than the %d a unix socket path may have: use a shorter directory", path, len(path), MaxPath)
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("unixsock: %s: %w", path, os.NewSyscallError("socket", err))
	}
	// bind(2) creates the file with this mode, less the umask.
	err = os.NewSyscallError("fchmod", unix.Fchmod(fd, Mode))
	if err == nil && setup != nil {
		err = setup(fd)
	}
	if err == nil {
		err = os.NewSyscallError("bind", unix.Bind(fd, &unix.SockaddrUnix{Name: path}))
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("unixsock: bind %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// listen starts accepting; the kernel caps the backlog at somaxconn.
func listen(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = unix.Listen(int(fd), unix.SOMAXCONN) }); err != nil {
		return err
	}
	return os.NewSyscallError("listen", lerr)
}
