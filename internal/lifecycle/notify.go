package lifecycle

import (
	"slices"
	"time"
)

// knownFields are the notify keys a worker may send; others are logged
// and ignored.
var knownFields = map[string]bool{
	"READY": true, "STOPPING": true, "WATCHDOG": true, "STATUS": true,
	"RELOADING": true, "MONOTONIC_USEC": true, "ERRNO": true, "MAINPID": true,
	// The worker serves what it accepted when told to stop (Env's
	// DrainsAccepted).
	"X_BATON_DRAINS_ACCEPTED": true,
}

func (m *Machine) onNotify(ev Notified) {
	w := m.workers[ev.PID]
	if w == nil && slices.Contains(m.exited[:], ev.PID) {
		m.log.Debug("notify message from a worker that has just exited, ignored", "pid", ev.PID)
		return
	}
	if w == nil {
		w = m.descendantOf(ev.PID)
	}
	if w == nil {
		m.dropped++
		m.log.Debug("notify message from a process that is not a worker, dropped", "pid", ev.PID, "uid", ev.UID, "dropped", m.dropped)
		return
	}
	for k := range ev.Fields {
		if !knownFields[k] {
			m.log.Debug("unknown notify field ignored", "slot", w.slot, "pid", w.pid, "field", k)
		}
	}
	if ev.Fields["WATCHDOG"] == "1" && w.state != wStarting {
		m.armWatchdog(w)
	}
	if st, ok := ev.Fields["STATUS"]; ok {
		w.status = st
	}
	if ev.Fields["X_BATON_DRAINS_ACCEPTED"] == "1" {
		m.env.DrainsAccepted(w.pid) // before it may be ready and replace another
	}
	if ev.Fields["READY"] == "1" {
		m.onReadySign(w, notifiedReady)
	}
	if ev.Fields["STOPPING"] == "1" {
		m.retire(w)
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
func (m *Machine) descendantOf(pid int) *worker {
	now := m.env.Now()
	if now.Sub(m.walkSecond) >= time.Second {
		m.walkSecond, m.walks = now, 0
	}
	if m.walks >= maxWalks {
		return nil
	}
	m.walks++
	for range maxAncestry {
		if pid = m.env.ParentOf(pid); pid <= 1 || pid == m.pid {
			return nil
		}
		if w := m.workers[pid]; w != nil {
			return w
		}
	}
	return nil
}
