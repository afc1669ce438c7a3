package supervisor

import (
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/lifecycle"
)

// reaper is the only code that waits for baton's children: every worker,
// and every orphan re-parented to baton. wait4(-1) would steal the status
// of a child someone else waits for, and there is one: the new baton of a
// self-upgrade, which tableflip waits for itself. So while an upgrade is
// under way (spare) the reaper waits for the workers alone, each by its
// pid; the other children's exits wait until the upgrade has ended.
type reaper struct {
	mu      sync.Mutex
	workers map[int]bool // started as workers, not reaped yet
	spare   bool
	wake    chan struct{}
}

func newReaper() *reaper {
	return &reaper{workers: map[int]bool{}, wake: make(chan struct{}, 1)}
}

// add records a worker's pid, as soon as it is started.
func (r *reaper) add(pid int) {
	r.mu.Lock()
	r.workers[pid] = true
	spare := r.spare
	r.mu.Unlock()
	if spare {
		r.poke() // it may have exited before it was known
	}
}

// spareOthers says whether a self-upgrade is under way. It must be set
// before the new baton is started.
func (r *reaper) spareOthers(on bool) {
	r.mu.Lock()
	r.spare = on
	r.mu.Unlock()
	r.poke()
}

func (r *reaper) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// collect reaps what has exited, without blocking.
func (r *reaper) collect(exits []lifecycle.Exited) []lifecycle.Exited {
	r.mu.Lock()
	defer r.mu.Unlock()
	wait := func(pid int) int {
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || got <= 0 {
				return 0 // ECHILD (no such children) or none exited yet
			}
			delete(r.workers, got)
			exits = append(exits, lifecycle.Exited{PID: got, How: describeExit(ws)})
			return got
		}
	}
	if r.spare {
		for pid := range r.workers {
			wait(pid)
		}
		return exits
	}
	for wait(-1) > 0 {
	}
	return exits
}

// run reaps on every SIGCHLD (and poke) until quit is closed. Before it
// reports the exits it reaped, it calls before (the notify socket's
// Sync): whatever those processes sent before they exited then reaches
// the loop ahead of their exit.
func (r *reaper) run(sigchld <-chan os.Signal, out chan<- any, quit <-chan struct{}, before func()) {
	var exits []lifecycle.Exited
	for {
		exits = r.collect(exits[:0])
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
		case <-r.wake:
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
