package lifecycle

import (
	"fmt"
	"time"

	"github.com/batonhq/baton/internal/config"
)

// Readiness. When a worker is ready is decided here and nowhere else,
// whatever worker.ready says: the shell only reports what it saw (a
// notify message, a line on a worker's readiness pipe) and the clock
// fires the timers armed here. A generation is ready once every slot
// holds a ready worker (generation.allReady); one that is not by
// reload.timeout is given up (nextTimedOut, in reload.go).

// ReadyHintAfter is how long a worker may be starting before baton warns,
// once, what it waits for and how to change it.
const ReadyHintAfter = 5 * time.Second

// readySign is something a starting worker does that may make it ready.
type readySign int

const (
	notifiedReady readySign = iota // READY=1 on the notify socket, from it or a descendant (onNotify)
	wroteLine                      // a line on its readiness pipe (ReadyLine)
	stayedUp                       // it stayed up for the delay of ready = "delay:D" (readyDelayDone)
)

// readyBy reports whether sign makes a worker of cfg ready. With
// "notify" READY=1 does; with "fd" a line on the pipe does, and READY=1
// too; with "delay:D" only staying up for D does, whatever the worker
// says.
func readyBy(cfg *config.Config, sign readySign) bool {
	switch {
	case cfg.Worker.ReadyDelay > 0:
		return sign == stayedUp
	case cfg.Worker.Ready == config.ReadyFD:
		return sign == wroteLine || sign == notifiedReady
	default:
		return sign == notifiedReady
	}
}

// readyPipe reports whether a worker of cfg gets a readiness pipe, the
// descriptor BATON_READY_FD names (Spawn.ReadyPipe).
func readyPipe(cfg *config.Config) bool { return cfg.Worker.Ready == config.ReadyFD }

// awaitReady arms the timer a worker just started waits on: the delay of
// ready = "delay:D", else the one-time hint when reload.timeout is
// longer than ReadyHintAfter.
func (m *Machine) awaitReady(w *worker) {
	cfg := w.gen.cfg
	if d := cfg.Worker.ReadyDelay; d > 0 {
		w.timers = append(w.timers, m.env.After(d, Timer{kind: readyDelayDone, w: w}))
	} else if cfg.Reload.Timeout.Std() > ReadyHintAfter {
		w.timers = append(w.timers, m.env.After(ReadyHintAfter, Timer{kind: readyHintDue, w: w}))
	}
}

// onReadySign takes a sign from w: a starting worker is ready if its
// generation's worker.ready counts that sign.
func (m *Machine) onReadySign(w *worker, sign readySign) {
	if w.state == wStarting && readyBy(w.gen.cfg, sign) {
		m.markReady(w)
	}
}

func (m *Machine) onReadyLine(ev ReadyLine) {
	w := m.workers[ev.PID]
	if w == nil {
		m.log.Debug("ready line from a worker that has exited, ignored", "pid", ev.PID)
		return
	}
	m.onReadySign(w, wroteLine)
}

// onReadyTimer handles the timers awaitReady armed, for a worker that is
// still there and starting.
func (m *Machine) onReadyTimer(t Timer) {
	w := t.w
	if m.workers[w.pid] != w || w.state != wStarting {
		return
	}
	switch t.kind {
	case readyDelayDone:
		m.onReadySign(w, stayedUp)
	case readyHintDue:
		m.log.Warn(fmt.Sprintf("%s is not ready after %s: %s", w, ReadyHintAfter, readyHint(w.gen.cfg)), "slot", w.slot, "pid", w.pid, "generation", w.gen.n)
	}
}

// markReady makes w ready and carries out what follows: the worker it
// replaces gets its signal, an operator waiting is answered, and a
// starting generation goes on (more workers, or promote once all are
// ready).
func (m *Machine) markReady(w *worker) {
	w.state = wReady
	m.armWatchdog(w)
	g := w.gen
	m.log.Info("worker ready", "slot", w.slot, "pid", w.pid, "generation", g.n, "after", m.env.Now().Sub(w.started).Round(time.Millisecond))
	if old := w.replaces; old != nil {
		w.replaces = nil
		m.signalOld(old, w.thenSignal)
	}
	if reply := w.onReady; reply != nil {
		w.onReady = nil
		reply(Result{Generation: g.n, Workers: len(g.slots)})
	}
	if g == m.current {
		m.checkScaled()
	}
	if g != m.next {
		m.publishStatus()
		return
	}
	if m.rolling(g) {
		m.switchSlot(w)
	}
	if !g.allReady() {
		if m.startNext(g) {
			m.publishStatus()
		}
		return
	}
	m.promote(g)
}

// notReadyError says why g is not ready by its deadline: a worker still
// starting, else how the last worker of an empty slot ended.
func (g *generation) notReadyError() error {
	timeout := g.cfg.Reload.Timeout.Std()
	for _, w := range g.slots {
		if w != nil && w.state != wReady {
			return fmt.Errorf("%s did not become ready within %s: %s", w, timeout, readyHint(g.cfg))
		}
	}
	for slot, last := range g.lastExit {
		if g.slots[slot] == nil && last != "" {
			return fmt.Errorf("worker %d was not ready within %s: %s", slot, timeout, last)
		}
	}
	return fmt.Errorf("%s did not become ready within %s", g, timeout)
}

// readyHint says what baton waits for before a worker of cfg is ready,
// and how a program that cannot do it reports readiness instead.
func readyHint(cfg *config.Config) string {
	switch cfg.Worker.Ready {
	case config.ReadyFD:
		return `baton waits for a line on the descriptor BATON_READY_FD names (ready = "fd"); a program that cannot write one can be counted ready once it has stayed up a while (ready = "delay:500ms")`
	default:
		return `baton waits for READY=1 on NOTIFY_SOCKET (ready = "notify"); a program that cannot send it can write a line to the descriptor BATON_READY_FD names (ready = "fd"), or be counted ready once it has stayed up a while (ready = "delay:500ms")`
	}
}
