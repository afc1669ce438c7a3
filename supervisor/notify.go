package supervisor

import (
	"bytes"
	"os"
	"slices"
	"strconv"

	"github.com/batonhq/baton/systemd"
)

// knownFields are the notify keys a worker may send; others are counted as
// unknown and ignored.
var knownFields = map[string]bool{
	"READY": true, "STOPPING": true, "WATCHDOG": true, "STATUS": true,
	"RELOADING": true, "MONOTONIC_USEC": true, "ERRNO": true, "MAINPID": true,
}

func (s *supervisor) onNotify(m systemd.Message) {
	w := s.owner(m.PID)
	if w == nil && slices.Contains(s.exited[:], m.PID) {
		s.log.Debug("notify message from a worker that has just exited, ignored", "pid", m.PID)
		return
	}
	if w == nil {
		s.dropped++
		s.log.Debug("notify message from a process that is not a worker, dropped", "pid", m.PID, "dropped", s.dropped)
		return
	}
	for k := range m.Fields {
		if !knownFields[k] {
			s.log.Debug("unknown notify field ignored", "slot", w.slot, "pid", w.pid, "field", k)
		}
	}
	if m.Fields["WATCHDOG"] == "1" {
		s.armWatchdog(w)
	}
	if st, ok := m.Fields["STATUS"]; ok {
		w.status = st
	}
	// With ready = "delay:D" readiness is staying up for D, whatever the
	// worker says.
	if m.Fields["READY"] == "1" && w.state == starting && w.gen.cfg.Worker.ReadyDelay == 0 {
		s.markReady(w)
	}
	if m.Fields["STOPPING"] == "1" {
		s.retire(w)
	}
}

// owner returns the live worker that sent a message: the worker itself, or
// a process descended from it (a shell wrapper's child, a pre-fork
// server's master). Ancestry is read from /proc; a sender that already
// exited is not a worker.
func (s *supervisor) owner(pid int) *worker {
	for depth := 0; depth < 16 && pid > 1; depth++ {
		if w := s.workers[pid]; w != nil {
			return w
		}
		pid = parentPID(pid)
	}
	return nil
}

// parentPID reads a process's parent from /proc/PID/stat, or 0.
func parentPID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may itself contain ") ":
	// the fields after the last ')' are "state ppid ...".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(string(f[1]))
	return ppid
}
