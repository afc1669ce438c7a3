package lifecycle

import (
	"errors"
	"fmt"
	"time"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/excerpt"
)

// reload is the reload under way.
type reload struct {
	started time.Time
	waiters []func(Result)
	// loading: the configuration is being read (Env.Load); the reload
	// goes on once it is Loaded.
	loading bool
	upgrade bool // a self-upgrade
	// successorTermed: a self-upgrade's successor was sent SIGTERM (its
	// deadline passed, or a stop came).
	successorTermed bool
	timers          []func()
}

func (r *reload) stopTimers() {
	for _, stop := range r.timers {
		stop()
	}
	r.timers = nil
}

// queue holds the reload requests that came while a reload could not
// start; one more reload after the current one serves them all.
type queue struct {
	waiters []func(Result) // a nil one came from a signal
	// upgrade: one asked for a self-upgrade; signal: one came from a
	// signal (no one waits for its answer).
	upgrade, signal bool
}

// outcome is the last reload's result, for the status line.
type outcome struct {
	at  time.Time
	err error
}

func (o outcome) describe(now time.Time) string {
	switch {
	case o.at.IsZero():
		return ""
	case o.err != nil:
		return fmt.Sprintf(", last reload failed %s ago: %v", now.Sub(o.at).Round(time.Second), o.err)
	}
	return fmt.Sprintf(", last reload ok %s ago", now.Sub(o.at).Round(time.Second))
}

// requestReload starts a reload (a self-upgrade when upgrade is set, or
// when the executable was replaced), or, while one runs (or the first
// generation is still starting), queues the request: every request queued
// meanwhile is served by one more reload after it, so reloads never
// overlap and none is lost. reply, if not nil, gets the outcome.
func (m *Machine) requestReload(reply func(Result), upgrade bool) {
	switch m.phase {
	case stopping, killing:
		answer(reply, Result{Err: errStopping})
	case lameDuck:
		answer(reply, Result{Err: m.lameDuckError()})
	case running:
		m.beginReload([]func(Result){reply}, upgrade)
	default:
		m.log.Info("reload requested while another is under way: queued", "upgrade", upgrade)
		m.queued.waiters = append(m.queued.waiters, reply)
		m.queued.upgrade = m.queued.upgrade || upgrade
		m.queued.signal = m.queued.signal || reply == nil
	}
}

// runQueued starts the queued reload, if any.
func (m *Machine) runQueued() {
	if len(m.queued.waiters) == 0 || m.phase != running || m.charge != inCharge {
		return
	}
	q := m.queued
	m.queued = queue{}
	m.beginReload(q.waiters, q.upgrade)
}

// beginReload asks for the configuration, to start the next generation
// once it is Loaded (docs/architecture.md, "Reload"). The serving
// generation is untouched until the new one is all ready. A new baton
// executable on disk makes it a self-upgrade.
func (m *Machine) beginReload(waiters []func(Result), upgrade bool) {
	m.endScaling(errors.New("supervisor: scale: a reload came before every new worker was ready"))
	m.phase = reloading
	m.reload = &reload{started: m.env.Now(), waiters: waiters}
	m.sendSystemd("RELOADING=1")
	changed, cannot := m.env.ExeChanged(), m.env.CanUpgrade()
	if !upgrade && changed && cannot == nil {
		m.log.Info("the baton executable on disk changed since start: upgrading to it")
		upgrade = true
	}
	if upgrade {
		m.beginUpgrade()
		return
	}
	m.log.Info("reloading")
	if changed {
		m.log.Warn("the baton executable on disk changed since start, and this baton cannot upgrade itself: restart the service to run the new version", "why", cannot)
	}
	m.reload.loading = true
	m.env.Load()
}

// onLoaded starts the next generation from the configuration the reload
// asked for. One that comes after its reload has ended (a stop came
// first) is dropped: no reload begins once baton is stopping.
func (m *Machine) onLoaded(ev Loaded) {
	if r := m.reload; r == nil || !r.loading || m.phase != reloading {
		return
	}
	m.reload.loading = false
	if ev.Err != nil {
		m.finishReload(fmt.Errorf("supervisor: reload: %w", ev.Err))
		return
	}
	cfg := ev.Config
	if err := m.checkReloadable(cfg); err != nil {
		m.finishReload(fmt.Errorf("supervisor: reload: %w", err))
		return
	}
	g, err := m.newGeneration(cfg)
	if err != nil {
		m.finishReload(fmt.Errorf("supervisor: reload: %w", err))
		return
	}
	m.next = g
	m.log.Info("starting "+g.String(), "count", len(g.slots), "command", cfg.Worker.Command)
	if err := m.startGeneration(g); err != nil {
		m.abandonNext(err)
		return
	}
	m.publishStatus()
}

// checkReloadable refuses what a reload cannot change in place.
func (m *Machine) checkReloadable(cfg *config.Config) error {
	if was := m.config().Control.Socket; cfg.Control.Socket != was {
		return fmt.Errorf("control.socket: changed from %s to %s: restart baton to move the control socket", excerpt.Quote(was), excerpt.Quote(cfg.Control.Socket))
	}
	if was := m.config().Worker.Balance; cfg.Worker.Balance != was {
		return fmt.Errorf("worker.balance: changed from %s to %s: restart baton to balance another way", excerpt.Quote(was), excerpt.Quote(cfg.Worker.Balance))
	}
	if was := m.config().Control.Metrics; cfg.Control.Metrics != was {
		return fmt.Errorf("control.metrics: changed from %s to %s: restart baton (or upgrade it) to move the metrics listener", excerpt.Quote(was), excerpt.Quote(cfg.Control.Metrics))
	}
	return nil
}

// Rollback. A reload rolls back when its new generation (m.next) fails
// in one of these ways, and in no other; each is decided here, in the
// function named:
//   - nextTimedOut: it is not all ready within reload.timeout (per step
//     when rolling: startMore arms the readyDeadline again);
//   - nextWorkerExited: one of its workers exits before all are ready;
//   - onLoaded, startNext: one of its workers cannot be started;
//   - stopReload: baton becomes a lame duck (a stop with stop.delay).
// The first three end in abandonNext, which at the first start fails
// baton instead (ErrNotReady); stopReload drains through rollBack alone.

// nextTimedOut: g's readyDeadline passed. If g is still starting, the
// first of its workers not ready says why it is given up.
func (m *Machine) nextTimedOut(g *generation) {
	if g == m.next {
		m.abandonNext(g.notReadyError())
	}
}

// nextWorkerExited reports whether w, which just exited and held its
// slot, fails the reload under way, and then fails it: a new worker that
// exits before its whole generation is ready does, and does not use the
// restart budget. At the first start it is a crash like any other.
func (m *Machine) nextWorkerExited(w *worker, how string) bool {
	if w.gen != m.next || m.current == nil {
		return false
	}
	what := "before it was ready"
	if w.state == wReady {
		what = "before its generation was ready"
	}
	m.abandonNext(fmt.Errorf("%s exited %s: %s", w, what, how))
	return true
}

// startNext starts g's next workers (startMore); if one cannot start, g
// is abandoned and startNext returns false.
func (m *Machine) startNext(g *generation) bool {
	if err := m.startMore(g); err != nil {
		m.abandonNext(err)
		return false
	}
	return true
}

// stopReload ends the reload under way as baton becomes a lame duck: its
// new generation rolls back, the serving one goes on serving, and the
// reload is answered that baton is stopping.
func (m *Machine) stopReload() {
	if g := m.next; g != nil {
		m.next = nil
		m.rollBack(g, "baton is stopping")
	}
	m.finishReload(errStopping)
}

// abandonNext gives up on the starting generation: at start baton fails;
// on a reload the new workers are stopped and the serving generation,
// which never stopped serving, stays.
func (m *Machine) abandonNext(why error) {
	g := m.next
	m.next = nil
	if m.current == nil {
		m.drainGeneration(g, "start failed")
		m.fail(fmt.Errorf("%w: %w", ErrNotReady, why))
		return
	}
	m.rollBack(g, "reload rolled back")
	m.finishReload(fmt.Errorf("%w: %w", errRolledBack, why))
}

// rollBack drains g, a reload's new generation, once it is no longer
// m.next. A rolling reload switched some slots already: old-config
// workers take them back.
func (m *Machine) rollBack(g *generation, why string) {
	m.drainGeneration(g, why)
	cur := m.current
	for slot, w := range cur.slots {
		if w == nil && cur.state == genServing {
			m.refill(cur, slot, nil, 0)
		}
	}
}

// finishReload ends the reload under way (if any): it tells systemd and
// every waiter the outcome, then starts a queued reload.
func (m *Machine) finishReload(err error) {
	r := m.reload
	if r == nil {
		return
	}
	upgrade := r.upgrade
	m.reload = nil
	r.stopTimers()
	now := m.env.Now()
	m.last = outcome{at: now, err: err}
	res := Result{Err: err, Took: now.Sub(r.started)}
	if g := m.current; g != nil {
		res.Generation, res.Workers = g.n, len(g.slots)
	}
	m.counts.reloaded(upgrade, err, res.Took)
	switch {
	case err != nil:
		m.log.Error("reload failed; the serving generation stays", "err", err, "generation", res.Generation)
	case !upgrade:
		m.log.Info("reload done", "generation", res.Generation, "took", res.Took.Round(time.Millisecond))
	}
	for _, w := range r.waiters {
		answer(w, res)
	}
	if m.phase != reloading && m.phase != upgrading {
		return // stopping: no READY=1, nothing queued starts
	}
	m.phase = running
	m.status = m.statusLine()
	m.sendSystemd("READY=1\nSTATUS=" + m.status)
	m.runQueued()
}

// answerQueued fails every queued request.
func (m *Machine) answerQueued(err error) {
	for _, w := range m.queued.waiters {
		answer(w, Result{Err: err})
	}
	m.queued = queue{}
}

func answer(reply func(Result), r Result) {
	if reply != nil {
		reply(r)
	}
}

// ReloadBuckets are the upper bounds, in seconds, of the reload duration
// histogram.
var ReloadBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// counts are the Machine's counters since start, for metrics.
type counts struct {
	reloads, upgrades map[string]int // by result: ok, failed, rolled_back
	// reloadSeconds counts the reloads that took at most each of
	// ReloadBuckets (the last one: all of them); reloadSum is their total.
	reloadSeconds []int
	reloadSum     time.Duration
}

// reloaded counts a finished reload (or a failed self-upgrade).
func (c *counts) reloaded(upgrade bool, err error, took time.Duration) {
	if c.reloads == nil {
		c.reloads, c.upgrades = map[string]int{}, map[string]int{}
		c.reloadSeconds = make([]int, len(ReloadBuckets)+1)
	}
	result := "ok"
	switch {
	case errors.Is(err, errRolledBack):
		result = "rolled_back"
	case err != nil:
		result = "failed"
	}
	if upgrade {
		c.upgrades[result]++
		return
	}
	c.reloads[result]++
	c.reloadSum += took
	for i, b := range ReloadBuckets {
		if took.Seconds() <= b {
			c.reloadSeconds[i]++
		}
	}
	c.reloadSeconds[len(ReloadBuckets)]++
}
