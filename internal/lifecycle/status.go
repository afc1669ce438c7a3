package lifecycle

import "fmt"

// Snapshot is the Machine's state as counts, for stats.
type Snapshot struct {
	Generation int // the serving one, 0 if none
	Workers    int // live worker processes, draining ones included
	Draining   int // generations draining
	Restarts   int // unplanned restarts since start
	Reloading  bool
	// NotifyDrops counts notify messages from processes that are no
	// worker's.
	NotifyDrops int
}

// Snapshot returns the state as counts.
func (m *Machine) Snapshot() Snapshot {
	s := Snapshot{
		Workers:     len(m.workers),
		Draining:    len(m.draining),
		Restarts:    m.budget.total,
		Reloading:   m.reload != nil,
		NotifyDrops: m.dropped,
	}
	if m.current != nil {
		s.Generation = m.current.n
	}
	return s
}

func (m *Machine) statusLine() string {
	g := m.serving()
	if g == nil {
		return "stopping"
	}
	now := m.env.Now()
	r := m.config().Restart
	line := fmt.Sprintf("%d/%d workers ready, generation %d, %d restarts in %s", g.readyCount(), len(g.slots), g.n,
		m.budget.recent(now, r.Window.Std()), r.Window.Std())
	if m.budget.spent {
		line += ", gave up restarting (budget spent)"
	}
	if m.reload != nil && m.next != nil {
		line += fmt.Sprintf(", reloading to generation %d", m.next.n)
	}
	return line + m.last.describe(now)
}

// publishStatus sends STATUS= to systemd when it changed.
func (m *Machine) publishStatus() {
	if m.stoppingOrGone() || m.charge == parentInCharge {
		return
	}
	if line := m.statusLine(); line != m.status {
		m.status = line
		m.sendSystemd("STATUS=" + line)
	}
}
