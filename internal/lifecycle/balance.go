package lifecycle

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// route tells the Env where connections go whenever that changed: after
// Start and after every event (docs/balancing.md).
func (m *Machine) route() {
	r := m.routes()
	if slices.Equal(r.Ready, m.routed.Ready) && slices.Equal(r.Slots, m.routed.Slots) && r.Shared == m.routed.Shared {
		return
	}
	m.routed = r
	m.env.Route(r)
}

// routes computes where connections go now.
func (m *Machine) routes() Routes {
	var ready []*worker
	slots := map[int]bool{}
	for _, w := range m.workers {
		switch w.state {
		case wReady:
			ready = append(ready, w)
			slots[w.slot] = true
		case wStarting:
			slots[w.slot] = true
		}
	}
	if !m.stoppingOrGone() && !m.budget.spent {
		// An empty slot waits for its replacement; with the budget spent
		// none comes.
		for _, g := range []*generation{m.current, m.next} {
			if g == nil {
				continue
			}
			for slot := range g.slots {
				slots[slot] = true
			}
		}
	}
	slices.SortFunc(ready, func(a, b *worker) int {
		if c := cmp.Compare(a.gen.n, b.gen.n); c != 0 {
			return c
		}
		return cmp.Compare(a.slot, b.slot)
	})
	r := Routes{Shared: m.Sharing()}
	for _, w := range ready {
		r.Ready = append(r.Ready, w.pid)
	}
	for slot := range slots {
		r.Slots = append(r.Slots, slot)
	}
	slices.Sort(r.Slots)
	return r
}

// onStuck handles a worker that left a connection it was passed unread
// (round-robin): the shell took back what it had not read and passes it
// nothing more, so no client waits on it. It is replaced as a worker that
// misses its watchdog is, new first and against the restart budget, but
// then drained rather than killed: its channel is all that is known to
// be stuck, and what it serves may still finish within drain_timeout.
func (m *Machine) onStuck(ev Stuck) {
	w := m.workers[ev.PID]
	if w == nil || w.stuck {
		return
	}
	w.stuck = true
	why := fmt.Sprintf("left a connection unread on its channel for %s (worker.channel_timeout)", ev.Unread.Round(time.Millisecond))
	switch {
	case w.state == wDraining:
		m.log.Warn("draining worker is stuck", "slot", w.slot, "pid", w.pid, "generation", w.gen.n, "why", why)
	case w.gen == m.current && w.gen.holds(w) && !m.stoppingOrGone():
		m.replaceFirst(w, "stuck", why, SIGTERM)
	default:
		// Not serving yet (a reload's new worker): draining it fails its
		// generation when it exits, as any early exit does.
		m.log.Warn("worker is stuck, draining it", "slot", w.slot, "pid", w.pid, "generation", w.gen.n, "why", why)
		m.drainWorker(w)
	}
}
