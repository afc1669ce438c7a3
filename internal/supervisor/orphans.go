package supervisor

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// As child subreaper (or PID 1), baton inherits every process its workers
// leave behind: a daemon a worker started with setsid escapes the
// worker's process group, and so the group signals, and may hold the
// listening sockets. While baton serves, such orphans are only reaped
// when they exit. Once it stops, every child that is not a worker (nor
// the successor of a self-upgrade) is an orphan to end before baton may
// exit: SIGTERM at once, to its process group too if it leads one, and
// SIGKILL from the stop deadline on. Each orphan that exits may hand its
// own children to baton in turn, so the sweep runs again on every exit.

// sweepOrphans signals the orphans not signalled yet (all of them again,
// with SIGKILL, once the stop deadline has passed). It does nothing until
// baton is stopping.
func (s *supervisor) sweepOrphans() {
	if s.phase != phaseStopping || s.handedOver && s.successor == 0 {
		return // a successor we cannot tell from an orphan must live
	}
	for _, pid := range childPIDs() {
		if s.workers[pid] != nil || pid == s.successor || s.orphans[pid] && !s.stopKilled {
			continue
		}
		sig := unix.SIGTERM
		if s.stopKilled {
			sig = unix.SIGKILL
		}
		if !s.orphans[pid] {
			s.log.Info("ending a process a worker left behind", "pid", pid, "signal", unix.SignalName(sig))
		}
		s.orphans[pid] = true
		if pgid, err := unix.Getpgid(pid); err == nil && pgid == pid {
			unix.Kill(-pid, sig)
		}
		unix.Kill(pid, sig)
	}
}

// childPIDs returns this process's children, zombies included.
func childPIDs() []int {
	var pids []int
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	if len(tasks) > 0 {
		return pids
	}
	// A kernel without CONFIG_PROC_CHILDREN: every process's parent.
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && parentPID(pid) == self {
			pids = append(pids, pid)
		}
	}
	return pids
}
