package lifecycle

import (
	"fmt"
	"time"

	"github.com/batonhq/baton/internal/config"
)

// A self-upgrade (docs/architecture.md, "Self-upgrade") replaces the
// running baton by a new process of the executable on disk, without
// closing a socket. In the Machine of the old baton it is a reload in
// phase upgrading: it ends with UpgradeDone, either failed (this baton
// keeps serving) or taken over, after which this baton is no longer in
// charge: it drains its workers, answers the requester once the successor
// said how it is (SuccessorInfo), and exits. In the Machine of the new
// one, charge is parentInCharge until its first generation is ready
// (takeOver).

// Timeouts of the handover's small steps, each one a local round trip.
const (
	BarrierTimeout   = 5 * time.Second
	SuccessorTimeout = 10 * time.Second
)

// upgradeTimeout is how long a self-upgrade waits before it sends the
// successor SIGTERM: the successor gives up by itself after its
// reload.timeout and then drains what it started, so this only ends a
// successor that hangs.
func upgradeTimeout(cfg *config.Config) time.Duration {
	return cfg.Reload.Timeout.Std() + cfg.Worker.DrainTimeout.Std() + BarrierTimeout + 5*time.Second
}

// beginUpgrade starts the successor; the reload under way ends when it
// has taken over or failed.
func (m *Machine) beginUpgrade() {
	m.phase = upgrading
	m.reload.upgrade = true
	if err := m.env.CanUpgrade(); err != nil {
		m.finishReload(err)
		return
	}
	if err := m.env.Upgrade(m.lastGen, m.Scaled()); err != nil {
		m.finishReload(fmt.Errorf("supervisor: self-upgrade: %w", err))
		return
	}
	m.publishStatus()
	m.reload.timers = append(m.reload.timers, m.env.After(upgradeTimeout(m.config()), Timer{kind: upgradeDeadline}))
}

// upgradeUnderWay reports whether a successor is being started.
func (m *Machine) upgradeUnderWay() bool { return m.phase == upgrading || m.phase == cancellingUpgrade }

// onUpgradeDeadline ends a successor that neither took over nor gave up
// in time: SIGTERM (it drains what it started), then SIGKILL.
func (m *Machine) onUpgradeDeadline(kill bool) {
	if !m.upgradeUnderWay() {
		return
	}
	if kill {
		m.log.Warn("self-upgrade: the new baton is still there, killing it")
		m.signalSuccessor(SIGKILL)
		return
	}
	m.log.Warn("self-upgrade: the new baton did not take over in time, stopping it", "after", upgradeTimeout(m.config()))
	m.signalSuccessor(SIGTERM)
	m.reload.timers = append(m.reload.timers, m.env.After(m.config().Worker.DrainTimeout.Std()+5*time.Second, Timer{kind: upgradeKill}))
}

// signalSuccessor signals the successor being started, found by the
// upgrader or, if it cannot tell (a wrapper script, a hung start), as the
// child that is no worker. It reports whether one was signalled.
func (m *Machine) signalSuccessor(sig Signal) bool {
	ok := m.env.SignalSuccessor(sig)
	if !ok {
		if pid := m.successorPID(); pid > 0 {
			m.env.Signal(pid, sig, Process)
			ok = true
		}
	}
	if ok && sig == SIGTERM && m.reload != nil {
		m.reload.successorTermed = true
	}
	return ok
}

// successorPID finds the child that is no worker nor from before the
// first worker: the successor (or, very rarely, an orphan being reaped),
// 0 if none.
func (m *Machine) successorPID() int {
	for _, pid := range m.env.Children() {
		if m.workers[pid] == nil && !m.foreign[pid] {
			return pid
		}
	}
	return 0
}

// onUpgradeDone either reports a failed self-upgrade (this baton keeps
// serving) or hands over: confirm the successor to systemd, drain every
// worker, silently, and leave the sockets to the successor.
func (m *Machine) onUpgradeDone(ev UpgradeDone) {
	r := m.reload
	if r == nil || !m.upgradeUnderWay() {
		return
	}
	r.stopTimers()
	if ev.Err != nil {
		err := ev.Err
		if ev.ParentRunning {
			err = fmt.Errorf("the baton this one took over from (pid %d) is still draining its workers: upgrade again once it has exited", m.parent)
		}
		if m.phase == cancellingUpgrade {
			m.finishReload(fmt.Errorf("supervisor: self-upgrade cancelled: baton is stopping (the new baton said: %w)", err))
			if m.delaying() {
				m.becomeLameDuck(m.drainAt)
				m.releaseSockets() // held back while the successor shared them
				return
			}
			m.stopNow()
			return
		}
		m.finishReload(fmt.Errorf("supervisor: self-upgrade failed, this baton keeps serving: %w", err))
		m.releaseSockets() // held back while the successor shared them
		return
	}
	if ev.PID == 0 {
		ev.PID = m.successorPID() // it did not say (not a baton of this kind?)
	}
	m.successor = ev.PID
	stopAsked := m.phase == cancellingUpgrade
	m.charge = successorInCharge
	m.log.Info("self-upgrade done, draining this baton's workers", "new_pid", ev.PID)
	m.env.HandOver(ev.PID)
	switch {
	case stopAsked && !r.successorTermed && ev.PID > 0:
		// The stop was meant for the service: pass it on (once: a
		// second SIGTERM kills).
		m.log.Info("passing the stop on to the new baton", "pid", ev.PID)
		m.env.Signal(ev.PID, SIGTERM, Process)
	case m.queued.signal && ev.PID > 0:
		// A SIGHUP during the upgrade may mean a config the new baton
		// has not read: pass it on rather than lose it.
		m.log.Info("passing the reload asked for during the self-upgrade on to the new baton", "pid", ev.PID)
		m.env.Signal(ev.PID, SIGHUP, Process)
	}
	m.drainAll("handed over to the new baton", fmt.Errorf("supervisor: a self-upgrade replaced this baton by pid %d: send the request again", ev.PID))
	m.env.After(BarrierTimeout+SuccessorTimeout, Timer{kind: handoverDeadline})
}

// onSuccessorInfo answers whoever asked for the self-upgrade.
func (m *Machine) onSuccessorInfo(ev SuccessorInfo) {
	r := m.reload
	if r == nil || m.charge != successorInCharge {
		return
	}
	m.reload = nil
	res := Result{Took: m.env.Now().Sub(r.started), Upgraded: true, PID: ev.PID, Generation: ev.Generation, Workers: ev.Workers}
	if ev.Err != nil {
		// Its control socket may be elsewhere (control.socket changed).
		if res.PID = m.successor; res.PID == 0 {
			res.PID = m.successorPID()
		}
		m.log.Warn("the new baton does not answer on this control socket", "err", ev.Err)
	}
	m.log.Info("self-upgrade done: the new baton serves", "new_pid", res.PID, "generation", res.Generation,
		"took", res.Took.Round(time.Millisecond))
	for _, w := range r.waiters {
		answer(w, res)
	}
}

// takeOver makes this baton, started by a self-upgrade, the one in
// charge once its first generation is ready: the parent learns it may
// hand over, systemd learns the new main pid, and this one takes on the
// control socket, systemd's watchdog and fd store.
func (m *Machine) takeOver() {
	m.charge, m.phase = inCharge, running
	m.counts.reloaded(true, nil, 0)
	m.log.Info("took over from the previous baton", "parent", m.parent, "generation", m.current.n)
	// The self-upgrade was a reload, and its outcome is this one.
	m.last = outcome{at: m.env.Now()}
	m.status = m.statusLine()
	m.env.TakeOver(m.status, m.config())
	m.armOwnWatchdog()
	m.runQueued()
}
