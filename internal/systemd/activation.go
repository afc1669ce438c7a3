package systemd

import (
	"fmt"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/spawn"
)

// Socket is a socket passed by systemd: its name (FileDescriptorName=) and a
// descriptor baton owns, marked close-on-exec, in whatever blocking mode
// systemd gave it.
type Socket struct {
	Name string
	Fd   int
}

// Inherited returns the sockets passed to this process by socket activation
// and removes LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID from the environment,
// so they are read exactly once and never leak to a child. It returns nil
// when nothing was passed.
//
// Each descriptor is duplicated through SyscallConn rather than Fd, which
// would switch a non-blocking socket to blocking mode for every process
// sharing it.
func Inherited() ([]Socket, error) {
	files := activation.Files(true)
	var out []Socket
	for _, f := range files {
		fd, err := spawn.DupFd(f)
		f.Close()
		if err != nil {
			for _, s := range out {
				unix.Close(s.Fd)
			}
			return nil, fmt.Errorf("systemd: inherited socket %q: %w", f.Name(), err)
		}
		out = append(out, Socket{Name: f.Name(), Fd: fd})
	}
	return out, nil
}
