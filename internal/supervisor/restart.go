package supervisor

import (
	"errors"
	"fmt"
	"time"
)

// ErrGiveUp is wrapped by the error Run returns when the restart budget
// was spent and restart.on_giveup is "exit".
var ErrGiveUp = errors.New("supervisor: restart budget spent")

// spendRestart counts one unplanned replacement against the restart budget
// (restart.limit per sliding restart.window). When the budget is already
// spent it gives up and returns false: the caller must not replace.
func (s *supervisor) spendRestart(why string) bool {
	if s.gaveUp {
		return false
	}
	r := s.cfg.Restart
	now := time.Now()
	kept := s.restartTimes[:0]
	for _, t := range s.restartTimes {
		if now.Sub(t) < r.Window.Std() {
			kept = append(kept, t)
		}
	}
	s.restartTimes = kept
	if len(s.restartTimes) >= r.Limit {
		s.giveUp(fmt.Errorf("%w: %d restarts within %s, and %s", ErrGiveUp, len(s.restartTimes), r.Window.Std(), why))
		return false
	}
	s.restartTimes = append(s.restartTimes, now)
	s.restarts++
	return true
}

// backoff returns how long slot waits before its replacement starts after
// w crashed: restart.backoff_min, doubling with each consecutive crash of
// the slot up to restart.backoff_max; a worker that stayed up
// restart.stable_after resets it.
func (s *supervisor) backoff(w *worker) time.Duration {
	r := s.cfg.Restart
	g := w.gen
	if time.Since(w.started) >= r.StableAfter.Std() {
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
func (s *supervisor) giveUp(err error) {
	s.gaveUp = true
	s.log.Error("giving up on restarts", "err", err, "on_giveup", s.cfg.Restart.OnGiveUp)
	survivors := 0
	if g := s.serving(); g != nil {
		survivors = g.readyCount()
	}
	if s.cfg.Restart.OnGiveUp == "degrade" && survivors > 0 {
		if g := s.next; g != nil && s.current == nil {
			// Giving up during the start: serve with what is ready.
			s.promote(g)
		}
		s.publishStatus()
		return
	}
	s.fail(err)
}

// serving returns the generation that serves, or the first one while it
// starts.
func (s *supervisor) serving() *generation {
	if s.current != nil {
		return s.current
	}
	return s.next
}
