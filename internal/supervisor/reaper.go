package supervisor

import (
	"errors"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/lifecycle"
)

// reap is the only code that waits for children. wait4(-1) would steal the
// status of any child someone else waits for, so nothing else may wait.
// Before it reports the exits it reaped, it calls before (the notify
// socket's Sync): whatever those processes sent before they exited then
// reaches the loop ahead of their exit. It ends when quit is closed.
func reap(sigchld <-chan os.Signal, out chan<- any, quit <-chan struct{}, before func()) {
	var exits []lifecycle.Exited
	for {
		exits = exits[:0]
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || pid <= 0 {
				break // ECHILD (no children) or none exited yet
			}
			exits = append(exits, lifecycle.Exited{PID: pid, How: describeExit(ws)})
		}
		if len(exits) > 0 {
			before()
		}
		for _, ev := range exits {
			select {
			case out <- ev:
			case <-quit:
				return
			}
		}
		select {
		case <-sigchld:
		case <-quit:
			return
		}
	}
}

// notifySIGCHLD must be set up before the first child is started, so no
// exit can go unnoticed.
func notifySIGCHLD() chan os.Signal {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGCHLD)
	return c
}

// describeExit says how a process ended, for logs and errors.
func describeExit(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit status " + itoa(ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return "ended"
}
