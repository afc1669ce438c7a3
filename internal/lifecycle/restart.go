package lifecycle

import (
	"fmt"
	"time"
)

// budget is the restart budget: restart.limit unplanned restarts per
// sliding restart.window.
type budget struct {
	total    int            // unplanned restarts since start
	bySlot   map[int]int    // and of each slot
	byReason map[string]int // and for each reason: crash, stopping, watchdog, memory, stuck
	giveUps  int            // times the budget ran out
	// times are the unplanned restarts within restart.window.
	times []time.Time
	spent bool // the budget ran out: no more replacements until a reload
}

// recent counts the unplanned restarts within window.
func (b *budget) recent(now time.Time, window time.Duration) int {
	n := 0
	for _, t := range b.times {
		if now.Sub(t) < window {
			n++
		}
	}
	return n
}

// spendRestart counts one unplanned replacement of slot's worker against
// the restart budget. When the budget is already spent it gives up and returns
// false: the caller must not replace.
func (m *Machine) spendRestart(slot int, reason, why string) bool {
	if m.budget.spent {
		return false
	}
	r := m.config().Restart
	now := m.env.Now()
	kept := m.budget.times[:0]
	for _, t := range m.budget.times {
		if now.Sub(t) < r.Window.Std() {
			kept = append(kept, t)
		}
	}
	m.budget.times = kept
	if len(kept) >= r.Limit {
		m.giveUp(fmt.Errorf("%w: %d restarts within %s, and %s", ErrGiveUp, len(kept), r.Window.Std(), why))
		return false
	}
	m.budget.times = append(m.budget.times, now)
	m.budget.total++
	if m.budget.bySlot == nil {
		m.budget.bySlot, m.budget.byReason = map[int]int{}, map[string]int{}
	}
	m.budget.bySlot[slot]++
	m.budget.byReason[reason]++
	return true
}

// backoff returns how long slot waits before its replacement starts after
// w crashed: restart.backoff_min, doubling with each consecutive crash of
// the slot up to restart.backoff_max; a worker that stayed up
// restart.stable_after resets it.
func (m *Machine) backoff(w *worker) time.Duration {
	r := m.config().Restart
	g := w.gen
	if m.env.Now().Sub(w.started) >= r.StableAfter.Std() {
		g.crashes[w.slot] = 0
	}
	d := r.BackoffMin.Std()
	for i := 0; i < g.crashes[w.slot] && d < r.BackoffMax.Std(); i++ {
		d *= 2
	}
	g.crashes[w.slot]++
	return min(d, r.BackoffMax.Std())
}

// giveUp stops replacing workers (docs/architecture.md, "Worker exit,
// crash and leaving"): with on_giveup = "exit" baton drains what is left
// and exits non-zero, so that systemd's Restart= and OnFailure= take over;
// with "degrade" the survivors keep serving.
func (m *Machine) giveUp(err error) {
	m.budget.spent = true
	m.budget.giveUps++
	m.log.Error("giving up on restarts", "err", err, "on_giveup", m.config().Restart.OnGiveUp)
	survivors := 0
	if g := m.serving(); g != nil {
		survivors = g.readyCount()
	}
	if m.config().Restart.OnGiveUp == "degrade" && survivors > 0 {
		if g := m.next; g != nil && m.current == nil {
			// Giving up during the start: serve with what is ready.
			m.promote(g)
		}
		m.publishStatus()
		return
	}
	m.fail(err)
}

// serving returns the generation that serves, or the first one while it
// starts.
func (m *Machine) serving() *generation {
	if m.current != nil {
		return m.current
	}
	return m.next
}
