package lifecycle

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Snapshot is the Machine's state, as stats, status and health read it:
// the one function that reads the state is Machine.Snapshot.
type Snapshot struct {
	Phase      string // starting, running, reloading, upgrading, stopping...
	Generation int    // the serving one, 0 if none
	// Scaled is how Desired departs from worker.count (zero if not).
	Scaled    Scaled
	Workers   int  // live worker processes, draining ones included
	Draining  int  // generations draining
	Restarts  int  // unplanned restarts since start
	Reloading bool // a reload or self-upgrade is under way
	// NotifyDrops counts notify messages from processes that are no
	// worker's.
	NotifyDrops int
	// Desired is the count of workers the pool is kept at now: the
	// serving generation's (the first one's while it starts), which is
	// worker.count or the count `baton scale` set.
	Desired int
	// SlotRestarts are the unplanned restarts of each slot of the pool
	// (Desired of them) since start, whether or not a worker holds it.
	SlotRestarts []int
	// Ready: a generation whose workers are all ready serves (also during
	// a reload), and baton is not stopping.
	Ready bool
	// StopIn is, while baton is a lame duck (phase "lame duck"), how long
	// until its workers drain; 0 otherwise.
	StopIn time.Duration
	// Budget is the restart budget: Used restarts within Window of
	// Limit; Spent once baton gave up restarting.
	Budget struct {
		Used, Limit int
		Window      time.Duration
		Spent       bool
	}
	// LastReload is the last reload's outcome; At is zero if none.
	LastReload struct {
		At  time.Time
		Err error
	}
	// Listeners are the names and addresses of the configuration in
	// force ("" for a socket from systemd).
	Listeners []Listener
	// Procs are the live workers, by slot, then generation.
	Procs []Proc
	// Counts since this baton started.
	Counts Counts
}

// Counts are the Machine's counters since start.
type Counts struct {
	// Restarts by reason: crash, stopping (a worker leaving),
	// watchdog, memory, stuck; operator restarts are not in the budget.
	Restarts map[string]int
	GiveUps  int
	// Reloads and Upgrades by result: ok, failed, rolled_back (an upgrade
	// this baton took over counts as ok).
	Reloads, Upgrades map[string]int
	// ReloadSeconds[i] counts the reloads that took at most
	// ReloadBuckets[i] seconds, the last one all of them; ReloadSum is
	// their total time.
	ReloadSeconds []int
	ReloadSum     time.Duration
}

// Listener is a configured socket.
type Listener struct{ Name, Address string }

// Proc is one live worker.
type Proc struct {
	Slot, PID, Generation int
	// State is starting, ready, draining (replaced or leaving), stuck
	// (it left a connection unread: drained once replaced) or stopping
	// (baton is stopping).
	State   string
	Started time.Time
	// Restarts counts the unplanned restarts of its slot.
	Restarts int
	Status   string // its last STATUS=
}

// Ready reports whether a generation whose workers are all ready serves
// (also during a reload or self-upgrade) and no stop has begun.
func (m *Machine) Ready() bool {
	return m.current != nil && (m.phase == running || m.phase == reloading || m.phase == upgrading)
}

// Snapshot returns the state.
func (m *Machine) Snapshot() Snapshot {
	s := Snapshot{
		Phase:       m.phase.String(),
		Workers:     len(m.workers),
		Draining:    len(m.draining),
		Reloading:   m.reload != nil,
		NotifyDrops: m.dropped,
	}
	if m.current != nil {
		s.Generation = m.current.n
	}
	s.Ready = m.Ready()
	if g := m.serving(); g != nil {
		s.Desired, s.Scaled = len(g.slots), scaledOf(g)
		for slot := range g.slots {
			s.SlotRestarts = append(s.SlotRestarts, m.budget.restarts(slot))
		}
	}
	if m.phase == lameDuck {
		s.StopIn = m.delayLeft()
	}
	if m.inForce != nil {
		r := m.config().Restart
		s.Budget.Used, s.Budget.Limit, s.Budget.Window, s.Budget.Spent = m.budget.recent(m.env.Now(), r.Window.Std()), r.Limit, r.Window.Std(), m.budget.spent()
		for _, l := range m.config().Listen {
			s.Listeners = append(s.Listeners, Listener{Name: l.Name, Address: l.Address})
		}
	}
	s.LastReload.At, s.LastReload.Err = m.last.at, m.last.err
	s.Counts = Counts{Reloads: maps.Clone(m.counts.reloads),
		Upgrades: maps.Clone(m.counts.upgrades), ReloadSeconds: slices.Clone(m.counts.reloadSeconds), ReloadSum: m.counts.reloadSum}
	s.Restarts, s.Counts.Restarts, s.Counts.GiveUps = m.budget.counts()
	if s.Counts.ReloadSeconds == nil {
		s.Counts.ReloadSeconds = make([]int, len(ReloadBuckets)+1)
	}
	for _, w := range m.live() {
		st := w.state.String()
		switch {
		case w.state == wDraining && m.stoppingOrGone():
			st = "stopping"
		case w.stuck:
			st = "stuck"
		}
		s.Procs = append(s.Procs, Proc{Slot: w.slot, PID: w.pid, Generation: w.gen.n, State: st, Started: w.started,
			Restarts: m.budget.restarts(w.slot), Status: w.status})
	}
	slices.SortStableFunc(s.Procs, func(a, b Proc) int {
		if a.Slot != b.Slot {
			return a.Slot - b.Slot
		}
		return a.Generation - b.Generation
	})
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
	if m.phase == lameDuck {
		line = m.lameDuckLine() + ", " + line
	}
	if m.budget.spent() {
		line += ", gave up restarting (budget spent)"
	}
	if sc := scaledOf(g).String(); sc != "" {
		line += ", " + sc
	}
	if m.reload != nil && m.next != nil {
		line += fmt.Sprintf(", reloading to generation %d", m.next.n)
	}
	return line + m.last.describe(now)
}

// delayLeft is how long a stop's stop.delay still lasts.
func (m *Machine) delayLeft() time.Duration { return max(m.drainAt.Sub(m.env.Now()), 0) }

// lameDuckLine says that baton is a lame duck, and for how long still.
func (m *Machine) lameDuckLine() string {
	return fmt.Sprintf("stopping in %s: lame duck (stop.delay)", m.delayLeft().Round(100*time.Millisecond))
}

// lameDuckError answers what a lame duck refuses (a reload, a scale).
func (m *Machine) lameDuckError() error {
	return fmt.Errorf("%w: a lame duck for %s more (stop.delay), then it drains", errStopping, m.delayLeft().Round(100*time.Millisecond))
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
