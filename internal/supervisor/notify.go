package supervisor

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/batonhq/baton/internal/systemd"
)

// knownFields are the notify keys a worker may send; others are counted as
// unknown and ignored.
var knownFields = map[string]bool{
	"READY": true, "STOPPING": true, "WATCHDOG": true, "STATUS": true,
	"RELOADING": true, "MONOTONIC_USEC": true, "ERRNO": true, "MAINPID": true,
}

func (s *supervisor) onNotify(m systemd.Message) {
	w := s.workers[m.PID]
	if w == nil && slices.Contains(s.exited[:], m.PID) {
		s.log.Debug("notify message from a worker that has just exited, ignored", "pid", m.PID)
		return
	}
	if w == nil {
		w = s.descendantOf(m.PID)
	}
	if w == nil {
		s.dropped++
		s.log.Debug("notify message from a process that is not a worker, dropped", "pid", m.PID, "uid", m.UID, "dropped", s.dropped)
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

// Looking up a sender's ancestry reads /proc (up to maxAncestry files):
// at most maxWalks lookups are made per second, so that a flood of
// datagrams from processes that are no workers stays cheap. A worker's
// own messages need none.
const (
	maxAncestry = 16
	maxWalks    = 200
)

// descendantOf returns the live worker a process descends from (a shell
// wrapper's child, a pre-fork server's master), or nil: for a sender
// that already exited, one that is no worker's, or when this second's
// lookups are spent. The walk ends at baton itself: above it no process
// is a worker's.
func (s *supervisor) descendantOf(pid int) *worker {
	now := time.Now()
	if now.Sub(s.walkSecond) >= time.Second {
		s.walkSecond, s.walks = now, 0
	}
	if s.walks >= maxWalks {
		return nil
	}
	s.walks++
	self := os.Getpid()
	for range maxAncestry {
		if pid = parentPID(pid); pid <= 1 || pid == self {
			return nil
		}
		if w := s.workers[pid]; w != nil {
			return w
		}
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
