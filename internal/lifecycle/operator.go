package lifecycle

import (
	"errors"
	"fmt"

	"github.com/batonhq/baton/internal/config"
)

// What an operator asks of a running pool besides reloads and stops
// (`baton restart`, `baton scale`): each acts on the serving generation
// only while nothing else changes it.

// What each Command does (Step calls apply): a new command's handler
// goes here.
func (ev Reload) apply(m *Machine)  { m.requestReload(ev.Reply, ev.Upgrade) }
func (ev Stop) apply(m *Machine)    { m.onStop(ev) }
func (ev Restart) apply(m *Machine) { m.onRestart(ev) }
func (ev Scale) apply(m *Machine)   { m.onScale(ev) }

// busy says why the pool cannot be changed now, nil if it can.
func (m *Machine) busy() error {
	switch {
	case m.phase == running && m.current != nil && m.scaling == nil:
		return nil
	case m.phase == lameDuck:
		return m.lameDuckError()
	case m.stoppingOrGone() || m.phase == cancellingUpgrade:
		return errStopping
	case m.scaling != nil:
		return errors.New("supervisor: a scale is under way: try again once it is done")
	}
	return fmt.Errorf("supervisor: baton is %s: try again once it serves", m.phase)
}

// onRestart replaces a serving worker, new first: the old one is drained
// once its replacement is ready. It is no crash: the restart budget is
// not spent.
func (m *Machine) onRestart(ev Restart) {
	if err := m.busy(); err != nil {
		answer(ev.Reply, Result{Err: err})
		return
	}
	g := m.current
	if ev.Slot < 0 || ev.Slot >= len(g.slots) {
		answer(ev.Reply, Result{Err: fmt.Errorf("supervisor: restart: no slot %d (the slots are 0 to %d)", ev.Slot, len(g.slots)-1)})
		return
	}
	old := g.slots[ev.Slot]
	if old == nil || old.state != wReady {
		answer(ev.Reply, Result{Err: fmt.Errorf("supervisor: restart: slot %d has no ready worker now (its worker is being replaced): try again", ev.Slot)})
		return
	}
	nw, err := m.startWorker(g, ev.Slot, old) // on failure the old one stays as it was
	if err != nil {
		answer(ev.Reply, Result{Err: err})
		return
	}
	m.log.Info("restarting worker, new first", "slot", ev.Slot, "pid", old.pid, "generation", g.n, "replacement", nw.pid)
	m.budget.operator()
	old.state = wDraining
	m.armDrainDeadline(old)
	nw.replaces, nw.thenSignal, nw.onReady = old, SIGTERM, ev.Reply
	m.publishStatus()
}

// outOfRange says why ev cannot scale was workers (it leaves fewer than
// one or more than config.MaxWorkers), and what would do.
func outOfRange(ev Scale, was int) error {
	const most = config.MaxWorkers
	if !ev.Relative {
		// baton scale refuses these itself (a usage error).
		return fmt.Errorf("supervisor: scale: %d workers: baton keeps 1 to %d", ev.N, most)
	}
	n, workers := was+ev.N, "workers"
	if was == 1 {
		workers = "worker"
	}
	what := fmt.Sprintf("%+d from %d %s leaves %d", ev.N, was, workers, n)
	if n > most {
		what = fmt.Sprintf("%+d from %d %s makes %d", ev.N, was, workers, n)
	}
	var do string
	switch {
	case n < 1 && was == 1:
		do = " (baton stop stops it)"
	case n < 1:
		do = fmt.Sprintf(" (baton scale %+d leaves 1)", 1-was)
	case was < most:
		do = fmt.Sprintf(" (baton scale %+d makes %d)", most-was, most)
	}
	return fmt.Errorf("supervisor: scale: %s: baton keeps 1 to %d%s", what, most, do)
}

// onScale changes the serving generation's number of workers.
func (m *Machine) onScale(ev Scale) {
	if err := m.busy(); err != nil {
		answer(ev.Reply, Result{Err: err})
		return
	}
	g := m.current
	n := ev.N
	if ev.Relative {
		n += len(g.slots)
	}
	if n < 1 || n > config.MaxWorkers {
		answer(ev.Reply, Result{Err: outOfRange(ev, len(g.slots))})
		return
	}
	was := len(g.slots)
	m.log.Info("scaling", "from", was, "to", n, "generation", g.n)
	if n < was {
		for _, w := range g.slots[n:] {
			if w != nil {
				m.drainWorker(w)
			}
		}
		g.resize(n)
		m.publishStatus()
		answer(ev.Reply, m.result())
		return
	}
	g.resize(n)
	for slot := was; slot < n; slot++ {
		m.refill(g, slot, nil, 0)
	}
	g.started = n
	m.scaling = ev.Reply
	if ev.Reply == nil {
		m.scaling = func(Result) {}
	}
	m.env.After(g.cfg.Reload.Timeout.Std(), Timer{kind: scaleDeadline, g: g})
	m.checkScaled()
	m.publishStatus()
}

// checkScaled answers the scale-up under way once every slot of the
// serving generation holds a ready worker.
func (m *Machine) checkScaled() {
	if m.scaling == nil || m.current == nil || !m.current.allReady() {
		return
	}
	reply := m.scaling
	m.scaling = nil
	m.log.Info("scaled", "workers", len(m.current.slots), "generation", m.current.n)
	reply(m.result())
}

// scaleTimedOut answers a scale-up whose workers were not all ready in
// reload.timeout; they keep being started (and replaced) as any other.
func (m *Machine) scaleTimedOut(g *generation) {
	if g == m.current && m.scaling != nil {
		m.endScaling(fmt.Errorf("supervisor: scale: not every worker was ready within %s (%d of %d are): they keep starting", g.cfg.Reload.Timeout.Std(), g.readyCount(), len(g.slots)))
	}
}

// endScaling fails the scale-up under way, if any.
func (m *Machine) endScaling(err error) {
	if reply := m.scaling; reply != nil {
		m.scaling = nil
		reply(Result{Err: err})
	}
}

// result is the serving generation as a Result.
func (m *Machine) result() Result {
	var r Result
	if g := m.current; g != nil {
		r.Generation, r.Workers = g.n, len(g.slots)
	}
	return r
}
