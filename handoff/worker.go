package handoff

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// ErrNoListeners is returned by the worker-side functions when this process
// was not passed any socket by socket activation.
var ErrNoListeners = errors.New("handoff: no inherited listeners (LISTEN_FDS unset)")

// inherited holds the sockets this process was started with. The
// socket-activation variables can be read only once (activation.Files
// unsets them, and the descriptors are converted and closed), so every
// worker-side function shares this one result.
var inherited struct {
	once      sync.Once
	listeners map[string]net.Listener
	packets   map[string]net.PacketConn
	err       error
}

// Listeners returns the stream listeners (TCP, unix stream or seqpacket)
// passed to this process by socket activation, keyed by their
// LISTEN_FDNAMES name (FileDescriptorName= in a systemd socket unit, the
// listener's name in baton's config). A descriptor without a name is keyed
// "LISTEN_FD_<fd>" (e.g. "LISTEN_FD_3"), as go-systemd's activation package
// names it; libsystemd's sd_listen_fds_with_names calls every such
// descriptor "unknown", which cannot tell two of them apart.
//
// The first call of Listeners, Listener, PacketConns or PacketConn reads
// LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID, removes them from the
// environment so no child inherits them, and converts every descriptor;
// later calls return the same sockets. Each call returns a new map, but the
// listeners in it are shared: closing one closes it for every caller.
//
// Converting a socket to a net.Listener puts it in non-blocking mode. That
// mode belongs to the socket, not to this process, so every process sharing
// it sees the change; that is what Go (and Node.js) workers need, and why a
// worker pool should not mix them with workers that accept in blocking mode.
//
// It returns an error wrapping ErrNoListeners if nothing was passed (or
// LISTEN_PID names another process), and an error if a descriptor is not a
// socket, is a stream socket that is not listening, or has the same name as
// another one: a socket this process cannot account for is never ignored.
// Datagram sockets are not listeners: PacketConns returns them. Under
// baton's round-robin balancing the stream listeners are the ones whose
// connections baton passes (see the package documentation).
func Listeners() (map[string]net.Listener, error) {
	inherited.once.Do(loadInherited)
	if inherited.err != nil {
		return nil, inherited.err
	}
	return maps.Clone(inherited.listeners), nil
}

// Listener returns the inherited stream listener named name. If there is
// none, the error names it and the listeners there are, e.g.
// `handoff: no listener named "x" (have "admin", "http")`.
func Listener(name string) (net.Listener, error) {
	ls, err := Listeners()
	if err != nil {
		return nil, err
	}
	if l, ok := ls[name]; ok {
		return l, nil
	}
	if _, ok := inherited.packets[name]; ok {
		return nil, fmt.Errorf("handoff: %q is a datagram socket, not a listener (use PacketConn)", name)
	}
	return nil, fmt.Errorf("handoff: no listener named %q (have %s)", name, quoteKeys(ls))
}

// PacketConns returns the datagram sockets (UDP, unix datagram) passed to
// this process by socket activation, keyed by name as Listeners keys
// listeners. It shares its single reading of the environment, and its
// errors, with Listeners.
func PacketConns() (map[string]net.PacketConn, error) {
	inherited.once.Do(loadInherited)
	if inherited.err != nil {
		return nil, inherited.err
	}
	return maps.Clone(inherited.packets), nil
}

// PacketConn returns the inherited datagram socket named name. If there is
// none, the error names it and the datagram sockets there are.
func PacketConn(name string) (net.PacketConn, error) {
	pcs, err := PacketConns()
	if err != nil {
		return nil, err
	}
	if pc, ok := pcs[name]; ok {
		return pc, nil
	}
	if _, ok := inherited.listeners[name]; ok {
		return nil, fmt.Errorf("handoff: %q is a stream listener, not a datagram socket (use Listener)", name)
	}
	return nil, fmt.Errorf("handoff: no datagram socket named %q (have %s)", name, quoteKeys(pcs))
}

// loadInherited fills in inherited. It runs once per process.
func loadInherited() {
	// activation.Files treats a malformed or foreign environment as "nothing
	// passed" and unsets it, so look at it first to say why.
	fdsEnv, pidEnv := os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID")
	files := activation.Files(true)
	passed, err := openChannel(pidEnv)
	if err != nil {
		closeFiles(files)
		inherited.err = err
		return
	}
	if len(files) == 0 && passed == nil {
		inherited.err = noListeners(fdsEnv, pidEnv)
		return
	}
	ls, pcs, err := convertAll(files)
	if err != nil {
		inherited.err = err
		return
	}
	for name, l := range passed {
		if _, dup := ls[name]; dup {
			inherited.err = fmt.Errorf("handoff: %q is both an inherited listener and a round-robin one", name)
			return
		}
		ls[name] = l
	}
	inherited.listeners, inherited.packets = ls, pcs
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// noListeners explains why activation.Files found nothing.
func noListeners(fdsEnv, pidEnv string) error {
	if fdsEnv == "" {
		return ErrNoListeners
	}
	if pid, err := strconv.Atoi(pidEnv); err != nil || pid != os.Getpid() {
		return fmt.Errorf("handoff: LISTEN_FDS=%s is for pid %q, not this process (%d): %w", fdsEnv, pidEnv, os.Getpid(), ErrNoListeners)
	}
	return fmt.Errorf("handoff: LISTEN_FDS=%q passes no descriptor: %w", fdsEnv, ErrNoListeners)
}

// convertAll turns every inherited file into a listener or packet conn and
// closes the files. On error it closes everything, so no inherited
// descriptor outlives the failed attempt.
func convertAll(files []*os.File) (map[string]net.Listener, map[string]net.PacketConn, error) {
	ls := make(map[string]net.Listener)
	pcs := make(map[string]net.PacketConn)
	byName := make(map[string]int) // name -> descriptor, to report duplicates
	var err error
	for i, f := range files {
		fd := 3 + i // activation.Files returns descriptors 3, 4, ... in order
		name := f.Name()
		if prev, dup := byName[name]; dup {
			err = fmt.Errorf("handoff: descriptors %d and %d are both named %q: give each socket its own name", prev, fd, name)
			break
		}
		byName[name] = fd
		var l net.Listener
		var pc net.PacketConn
		l, pc, err = convert(f)
		if err != nil {
			err = fmt.Errorf("handoff: inherited descriptor %d %q: %w", fd, name, err)
			break
		}
		if l != nil {
			ls[name] = l
		} else {
			pcs[name] = pc
		}
		f.Close()
	}
	if err != nil {
		closeFiles(files) // the already converted ones again: harmless
		for _, l := range ls {
			l.Close()
		}
		for _, pc := range pcs {
			pc.Close()
		}
		return nil, nil, err
	}
	return ls, pcs, nil
}

// convert makes a net.Listener (stream sockets) or a net.PacketConn
// (datagram sockets) from f. Both hold their own duplicate of the
// descriptor; the caller closes f.
func convert(f *os.File) (net.Listener, net.PacketConn, error) {
	// SyscallConn rather than Fd: Fd would switch the socket to blocking
	// mode, for every process that shares it.
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	var typ, listening int
	var serr error
	err = rc.Control(func(fd uintptr) {
		typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
		if serr != nil {
			serr = os.NewSyscallError("getsockopt SO_TYPE", serr)
			return
		}
		if typ == unix.SOCK_STREAM || typ == unix.SOCK_SEQPACKET {
			listening, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
			if serr != nil {
				serr = os.NewSyscallError("getsockopt SO_ACCEPTCONN", serr)
			}
		}
	})
	if err != nil {
		return nil, nil, err
	}
	if errors.Is(serr, unix.ENOTSOCK) {
		return nil, nil, fmt.Errorf("not a socket: %w", serr)
	}
	if serr != nil {
		return nil, nil, serr
	}
	switch typ {
	case unix.SOCK_DGRAM:
		pc, err := net.FilePacketConn(f)
		return nil, pc, err
	case unix.SOCK_STREAM, unix.SOCK_SEQPACKET:
		if listening == 0 {
			// e.g. a connection from a systemd socket with Accept=yes.
			return nil, nil, errors.New("stream socket is not listening")
		}
		l, err := net.FileListener(f)
		return l, nil, err
	}
	return nil, nil, fmt.Errorf("unsupported socket type %d", typ)
}

// quoteKeys lists m's keys, sorted and quoted, or says there are none.
func quoteKeys[V any](m map[string]V) string {
	if len(m) == 0 {
		return "none"
	}
	keys := slices.Sorted(maps.Keys(m))
	for i, k := range keys {
		keys[i] = strconv.Quote(k)
	}
	return strings.Join(keys, ", ")
}
