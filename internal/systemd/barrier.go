package systemd

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Barrier sends BARRIER=1 with the write end of a pipe and waits until the
// service manager closes it, which it does once it has processed every
// message sent before. A supervisor that just sent MAINPID= uses it to
// know systemd has switched to it before the old supervisor exits. Outside
// systemd it returns nil at once.
func Barrier(ctx context.Context) error {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return fmt.Errorf("systemd: barrier: %w", os.NewSyscallError("pipe2", err))
	}
	r, w := p[0], p[1]
	defer unix.Close(r)
	err := sendWithFD("BARRIER=1", w)
	unix.Close(w)
	if err != nil {
		return fmt.Errorf("systemd: barrier: %w", err)
	}
	// POLLHUP on the read end means the last write end (systemd's copy)
	// is closed. Poll in short slices so ctx is honoured.
	for {
		fds := []unix.PollFd{{Fd: int32(r), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 50)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("systemd: barrier: %w", os.NewSyscallError("poll", err))
		}
		if n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("systemd: barrier: service manager did not answer: %w", err)
		}
	}
}
