package lifecycle

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// budget is the restart budget: restart.limit unplanned restarts per
// sliding restart.window, and the restart counters Snapshot shows. Only
// its methods touch its fields; the limit and window come with each call,
// since a reload may change them.
type budget struct {
	total    int            // unplanned restarts since start
	bySlot   map[int]int    // and of each slot
	byReason map[string]int // and for each reason: crash, stopping, watchdog, memory, stuck; and operator
	giveUps  int            // times the budget ran out
	// times are the unplanned restarts within restart.window.
	times     []time.Time
	exhausted bool // the budget ran out: no more replacements until a reload
}

// inWindow reports whether a restart at t still counts at now.
func inWindow(now, t time.Time, window time.Duration) bool {
	return now.Sub(t) < window
}

// recent counts the unplanned restarts within window.
func (b *budget) recent(now time.Time, window time.Duration) int {
	n := 0
	for _, t := range b.times {
		if inWindow(now, t, window) {
			n++
		}
	}
	return n
}

// spend counts one unplanned restart of slot for reason at now. When
// window already holds limit restarts, the budget is spent instead: it
// counts nothing and returns false with that number.
func (b *budget) spend(now time.Time, limit int, window time.Duration, slot int, reason string) (int, bool) {
	b.times = slices.DeleteFunc(b.times, func(t time.Time) bool { return !inWindow(now, t, window) })
	if len(b.times) >= limit {
		b.exhausted = true
		b.giveUps++
		return len(b.times), false
	}
	b.times = append(b.times, now)
	b.total++
	b.count(reason)
	b.bySlot[slot]++
	return len(b.times), true
}

// operator counts an operator's restart: shown, but not against the budget.
func (b *budget) operator() {
	b.count("operator")
}

func (b *budget) count(reason string) {
	if b.byReason == nil {
		b.bySlot, b.byReason = map[int]int{}, map[string]int{}
	}
	b.byReason[reason]++
}

// spent reports whether the budget ran out.
func (b *budget) spent() bool {
	return b.exhausted
}

// reset lets restarts resume after a reload brought a full generation
// back, and reports whether the budget had been spent.
func (b *budget) reset() bool {
	was := b.exhausted
	b.exhausted = false
	return was
}

// restarts returns the unplanned restarts of slot since start.
func (b *budget) restarts(slot int) int {
	return b.bySlot[slot]
}

// counts returns the unplanned restarts since start, and a copy of the
// restarts by reason and the times the budget ran out, for Snapshot.
func (b *budget) counts() (total int, byReason map[string]int, giveUps int) {
	return b.total, maps.Clone(b.byReason), b.giveUps
}

// spendRestart counts one unplanned replacement of slot's worker against
// the restart budget. When the budget is already spent it gives up and returns
// false: the caller must not replace.
func (m *Machine) spendRestart(slot int, reason, why string) bool {
	if m.budget.spent() {
		return false
	}
	r := m.config().Restart
	n, ok := m.budget.spend(m.env.Now(), r.Limit, r.Window.Std(), slot, reason)
	if !ok {
		m.giveUp(fmt.Errorf("%w: %d restarts within %s, and %s", ErrGiveUp, n, r.Window.Std(), why))
	}
	return ok
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
