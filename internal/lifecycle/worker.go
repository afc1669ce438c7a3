package lifecycle

import (
	"fmt"
	"slices"
	"time"
)

type workerState int

const (
	wStarting workerState = iota // started, not ready yet
	wReady                       // serving
	wDraining                    // told to stop, or leaving on its own
)

func (s workerState) String() string {
	return [...]string{"starting", "ready", "draining"}[s]
}

// worker is one worker process.
type worker struct {
	slot    int
	gen     *generation
	pid     int
	state   workerState
	started time.Time
	// status is the worker's last STATUS= message.
	status string
	timers []func()
	// termSent is set once SIGTERM went to its group.
	termSent bool
	// stuck: it left a connection it was passed unread (round-robin).
	stuck bool
	// stopWatchdog ends the watchdog timer, which fires when no
	// WATCHDOG=1 came for worker.watchdog; wdSeq tells a stale expiry
	// from the current one.
	stopWatchdog func()
	wdSeq        int
	// replaces is the worker this one was started to replace (new first);
	// once this one is ready, that one gets thenSignal.
	replaces   *worker
	thenSignal Signal
	// onReady, if not nil, is told once this worker is ready (or that it
	// exited before): an operator's restart waits for it.
	onReady func(Result)
}

func (w *worker) String() string { return fmt.Sprintf("worker %d (pid %d)", w.slot, w.pid) }

func (w *worker) stopTimers() {
	for _, stop := range w.timers {
		stop()
	}
	w.timers = nil
	if w.stopWatchdog != nil {
		w.stopWatchdog()
	}
}

// startWorker starts the worker of g's slot, new first in place of
// replaces if not nil.
func (m *Machine) startWorker(g *generation, slot int, replaces *worker) (*worker, error) {
	sp := Spawn{Generation: g.n, Slot: slot, Config: g.cfg, ReadyPipe: readyPipe(g.cfg)}
	if replaces != nil {
		sp.Replaces = replaces.pid
	}
	pid, err := m.env.Start(sp)
	if err != nil {
		return nil, fmt.Errorf("supervisor: start worker %d: %w", slot, err)
	}
	w := &worker{slot: slot, gen: g, pid: pid, started: m.env.Now()}
	m.workers[pid] = w
	g.slots[slot] = w
	g.live++
	m.awaitReady(w)
	m.log.Info("worker started", "slot", slot, "pid", pid, "generation", g.n)
	return w, nil
}

// armWatchdog (re)starts the worker's watchdog, if worker.watchdog is set.
// It starts once the worker is ready, as systemd's WatchdogSec= starts once
// start-up is complete: until then reload.timeout bounds the worker.
func (m *Machine) armWatchdog(w *worker) {
	d := w.gen.cfg.Worker.Watchdog.Std()
	if d <= 0 {
		return
	}
	if w.stopWatchdog != nil {
		w.stopWatchdog()
	}
	w.wdSeq++
	w.stopWatchdog = m.env.After(d, Timer{kind: watchdogExpired, w: w, seq: w.wdSeq})
}

// replaceFirst starts w's replacement and, once that is ready, sends w
// then: SIGTERM to drain it (it grew too big), SIGKILL (it hangs). w's
// drain deadline applies meanwhile, in case no replacement gets ready.
func (m *Machine) replaceFirst(w *worker, reason, why string, then Signal) {
	g := w.gen
	if w.state == wDraining {
		return
	}
	if g != m.current || !g.holds(w) || m.stoppingOrGone() {
		m.env.Signal(w.pid, then, Group) // not serving: nothing to replace it for
		return
	}
	m.log.Warn("replacing worker", "slot", w.slot, "pid", w.pid, "generation", g.n, "why", why)
	w.state = wDraining
	m.armDrainDeadline(w)
	g.slots[w.slot] = nil
	if !m.spendRestart(w.slot, reason, fmt.Sprintf("%s %s", w, why)) {
		m.env.Signal(w.pid, then, Group)
		m.publishStatus()
		return
	}
	m.refill(g, w.slot, w, then)
	m.publishStatus()
}

// refill starts a worker in g's empty slot, to take over from old (if not
// nil): once the new one is ready, old gets then. When no worker can be
// started at all (fork or exec failed), old gets then at once and the
// slot is tried again after RespawnDelay.
func (m *Machine) refill(g *generation, slot int, old *worker, then Signal) {
	nw, err := m.startWorker(g, slot, old)
	if err != nil {
		m.log.Error("cannot start worker, retrying", "slot", slot, "err", err, "after", RespawnDelay)
		m.env.After(RespawnDelay, Timer{kind: respawnSlot, g: g, slot: slot})
		if old != nil {
			m.signalOld(old, then)
		}
		return
	}
	nw.replaces, nw.thenSignal = old, then
}

// signalOld sends sig to a worker being replaced, unless it has exited or
// was told to drain already.
func (m *Machine) signalOld(old *worker, sig Signal) {
	if m.workers[old.pid] != old || sig == SIGTERM && old.termSent {
		return
	}
	if sig == SIGTERM {
		old.termSent = true
	}
	m.env.Signal(old.pid, sig, Group)
}

// drainWorker sends SIGTERM to a worker that is not draining yet and arms
// its drain deadline.
func (m *Machine) drainWorker(w *worker) {
	if w.termSent {
		return
	}
	w.state = wDraining
	m.signalOld(w, SIGTERM)
	m.armDrainDeadline(w)
}

// armDrainDeadline kills w's group once its generation's drain_timeout has
// passed, if it is still there.
func (m *Machine) armDrainDeadline(w *worker) {
	w.timers = append(w.timers, m.env.After(w.gen.cfg.Worker.DrainTimeout.Std(), Timer{kind: drainDeadline, w: w}))
}

func (m *Machine) onExit(ev Exited) {
	// A child that exits may leave its own children to baton; a worker
	// that exits may make room for a rolling reload's next one.
	defer m.sweepOrphans()
	defer m.continueRolling()
	w := m.workers[ev.PID]
	if w == nil {
		delete(m.orphans, ev.PID)
		delete(m.foreign, ev.PID)
		m.log.Debug("reaped a child that is no worker", "pid", ev.PID, "how", ev.How)
		return
	}
	delete(m.workers, ev.PID)
	if reply := w.onReady; reply != nil {
		w.onReady = nil
		reply(Result{Err: fmt.Errorf("supervisor: %s exited before it was ready: %s", w, ev.How)})
	}
	m.exited[m.nexit%len(m.exited)] = ev.PID
	m.nexit++
	w.stopTimers()
	// Anything the worker left in its group is an orphan now.
	m.env.Signal(w.pid, SIGKILL, Group)
	g := w.gen
	g.live--
	if !g.holds(w) {
		// Replaced (or scaled away) already: it was draining.
		m.log.Info("worker exited", "slot", w.slot, "pid", w.pid, "generation", g.n, "how", ev.How)
		if g.state == genDraining && g.live == 0 {
			m.generationGone(g)
		}
		m.publishStatus()
		return
	}
	g.slots[w.slot] = nil
	g.lastExit[w.slot] = fmt.Sprintf("%s exited: %s", w, ev.How)
	if m.nextWorkerExited(w, ev.How) {
		return
	}
	if m.stoppingOrGone() || g.state == genDraining {
		m.publishStatus()
		return
	}
	if !m.spendRestart(w.slot, "crash", fmt.Sprintf("%s exited: %s", w, ev.How)) {
		m.publishStatus()
		return
	}
	delay := m.backoff(w)
	m.log.Warn("worker exited unexpectedly, replacing it", "slot", w.slot, "pid", w.pid, "generation", g.n, "how", ev.How, "after", delay)
	m.env.After(delay, Timer{kind: respawnSlot, g: g, slot: w.slot})
	m.publishStatus()
}

// retire takes a worker that announced it is leaving (STOPPING=1) out of
// its slot and starts its replacement at once, before it has finished
// draining: the socket never lacks a ready worker for longer than the
// replacement takes to start. Once the replacement is ready the leaving
// worker gets SIGTERM, so that it drains even when its STOPPING=1 came
// from a process it started rather than from the one that serves (a
// worker draining already ignores it).
func (m *Machine) retire(w *worker) {
	if w.state == wDraining {
		return
	}
	w.state = wDraining
	g := w.gen
	m.armDrainDeadline(w)
	if !g.holds(w) || g != m.current || m.stoppingOrGone() {
		return // a starting worker leaving fails its generation when it exits
	}
	g.slots[w.slot] = nil
	if !m.spendRestart(w.slot, "stopping", fmt.Sprintf("%s is leaving", w)) {
		m.signalOld(w, SIGTERM) // no replacement: let it drain now
		m.publishStatus()
		return
	}
	m.log.Info("worker is leaving, starting its replacement", "slot", w.slot, "pid", w.pid, "generation", g.n)
	m.refill(g, w.slot, w, SIGTERM)
	m.publishStatus()
}

// checkMemory replaces, new first, every serving worker whose resident
// memory is above worker.max_memory, then schedules the next check.
func (m *Machine) checkMemory() {
	if m.stoppingOrGone() {
		return
	}
	m.env.After(MemoryCheckInterval, Timer{kind: memoryCheck})
	g := m.current
	if g == nil || g.cfg.Worker.MaxMemory <= 0 {
		return
	}
	limit := int64(g.cfg.Worker.MaxMemory)
	for _, w := range g.slots {
		if w == nil || w.state != wReady {
			continue
		}
		if rss := m.env.RSS(w.pid); rss > limit {
			m.replaceFirst(w, "memory", fmt.Sprintf("uses %d MiB, above max_memory %d MiB", rss>>20, limit>>20), SIGTERM)
		}
	}
}

// sweepOrphans signals the children that are no worker, nor the
// successor of a self-upgrade, nor from before the first worker, and were
// not signalled yet; all of them again, with SIGKILL, once killing. It
// does nothing until baton stops: while it serves, orphans are only
// reaped when they exit. Each orphan that exits may hand its own children
// to baton in turn, so the sweep runs again on every exit. An orphan that
// is no longer a child is gone even without an Exited event: the new
// baton of a self-upgrade cut short is the upgrader's to reap, not the
// reaper's. So while orphans are left, the sweep runs again every
// OrphanCheckInterval.
func (m *Machine) sweepOrphans() {
	if !m.stoppingOrGone() || m.charge == successorInCharge && m.successor == 0 {
		return // a successor we cannot tell from an orphan must live
	}
	kill := m.phase == killing
	children := m.env.Children()
	for pid := range m.orphans {
		if !slices.Contains(children, pid) {
			delete(m.orphans, pid)
		}
	}
	for _, pid := range children {
		if m.workers[pid] != nil || pid == m.successor || m.foreign[pid] || m.orphans[pid] && !kill {
			continue
		}
		sig := SIGTERM
		if kill {
			sig = SIGKILL
		}
		if !m.orphans[pid] {
			m.log.Info("ending a process a worker left behind", "pid", pid, "signal", sig.String())
		}
		m.orphans[pid] = true
		m.env.Signal(pid, sig, Orphan)
	}
	if len(m.orphans) > 0 && !m.orphanCheck {
		m.orphanCheck = true
		m.env.After(OrphanCheckInterval, Timer{kind: orphanCheck})
	}
}
