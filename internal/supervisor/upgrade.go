package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/systemd"
	"github.com/batonhq/baton/internal/upgrade"
)

// A self-upgrade (docs/architecture.md, "Self-upgrade") replaces the running supervisor by a new
// process of the executable on disk, without closing a socket:
//
//  1. The old supervisor starts its successor through the upgrader, which
//     passes every listener and the control socket, with a note saying
//     what each one is (upgradeNote).
//  2. The successor takes the sockets its configuration uses and starts
//     its own generation of workers on them, saying nothing to systemd.
//  3. Once they are ready it tells the old one (upgrader Ready): from then
//     on it is in charge. It sends MAINPID=<its pid> and READY=1, and a
//     BARRIER=1, and answers on the control socket.
//  4. The old supervisor, still systemd's main process until then, sends
//     MAINPID=<successor> and READY=1 too (so NotifyAccess=main works as
//     well as all), waits for systemd's answer to its BARRIER=1, drains
//     its workers and exits. It is silent towards systemd from step 3.
//
// A successor that fails (cannot start, exits, or its workers are not
// ready within its reload.timeout) drains what it started and exits,
// saying why; the old one never stopped serving and reports the failure
// like a failed reload. A successor still not done after the old one's
// own upgrade deadline is sent SIGTERM, and SIGKILL a drain later.

// upgradeNote is what a supervisor tells its successor besides the
// descriptors themselves.
type upgradeNote struct {
	Generation int    `json:"generation"`  // the newest so far; the successor's is the next
	Control    string `json:"control"`     // control socket path
	ControlKey string `json:"control_key"` // and its name for the upgrader
	// RuntimeDir is the runtime directory, which the successor keeps;
	// OwnsRuntimeDir: a baton made it, and the last one removes it.
	RuntimeDir     string           `json:"runtime_dir,omitempty"`
	OwnsRuntimeDir bool             `json:"owns_runtime_dir,omitempty"`
	Listeners      []passedListener `json:"listeners"`
}

// passedListener describes one listening socket handed over, under Key.
type passedListener struct {
	Key     string `json:"key"`
	Name    string `json:"name"`
	Network string `json:"network,omitempty"` // empty for a socket from a .socket unit
	Addr    string `json:"addr,omitempty"`
	Systemd bool   `json:"systemd,omitempty"` // from a .socket unit
	Stored  bool   `json:"stored,omitempty"`  // in systemd's fd store
}

// Events of a self-upgrade.
type (
	// upgradeDone: the old supervisor's Upgrade call returned.
	upgradeDone struct {
		pid int // the successor's, when known
		err error
	}
	// successorInfo: what the successor answered on the control socket
	// once systemd knew it as the main process.
	successorInfo struct {
		st  *Stats
		err error
	}
)

// Timeouts of the handover's small steps, each one a local round trip.
const (
	barrierTimeout   = 5 * time.Second
	successorTimeout = 10 * time.Second
)

// UpgradeBackstop is the upgrader's own limit on a successor that never
// gets ready. The supervisor's upgrade deadline (upgradeTimeout), from the
// configuration in force, ends it long before.
const UpgradeBackstop = time.Hour

// upgradeTimeout is how long a self-upgrade waits before it sends the
// successor SIGTERM: the successor gives up by itself after its
// reload.timeout and then drains what it started, so this only ends a
// successor that hangs.
func upgradeTimeout(cfg *config.Config) time.Duration {
	return cfg.Reload.Timeout.Std() + cfg.Worker.DrainTimeout.Std() + barrierTimeout + 5*time.Second
}

// beginUpgrade starts the successor; the reload under way (s.reload)
// ends when it has taken over or failed.
func (s *supervisor) beginUpgrade() {
	switch {
	case s.upg == nil:
		s.finishReload(errors.New("supervisor: self-upgrade: not possible here (only `baton run` can replace itself)"))
		return
	case os.Getpid() == 1:
		// Its exit would end the container, successor and all.
		s.finishReload(errors.New("supervisor: self-upgrade: baton is PID 1 here; restart the container to run a new version"))
		return
	}
	s.reload.upgrade = true
	s.reload.exits = map[int]string{}
	err := s.passListeners(false)
	var b []byte
	if err == nil {
		b, err = json.Marshal(s.upgradeNote())
	}
	if err != nil {
		s.finishReload(fmt.Errorf("supervisor: self-upgrade: %w", err))
		return
	}
	s.log.Info("self-upgrade: starting a new baton", "executable", os.Args[0])
	s.publishStatus()
	s.reload.timers = append(s.reload.timers, s.after(upgradeTimeout(s.cfg), timerEvent{kind: upgradeDeadline}))
	note := string(b)
	s.goTask(func() {
		pid, err := s.upg.Upgrade(note)
		s.post(upgradeDone{pid: pid, err: err})
	})
}

// upgrading reports whether a successor is starting: it shares every
// socket already.
func (s *supervisor) upgrading() bool {
	return s.reload != nil && s.reload.upgrade && !s.handedOver
}

// onUpgradeDeadline ends a successor that neither took over nor gave up
// in time: SIGTERM (it drains what it started), then SIGKILL.
func (s *supervisor) onUpgradeDeadline(kill bool) {
	if !s.upgrading() {
		return
	}
	if kill {
		s.log.Warn("self-upgrade: the new baton is still there, killing it")
		s.signalSuccessor(unix.SIGKILL)
		return
	}
	s.log.Warn("self-upgrade: the new baton did not take over in time, stopping it", "after", upgradeTimeout(s.cfg))
	s.signalSuccessor(unix.SIGTERM)
	s.reload.timers = append(s.reload.timers, s.after(s.cfg.Worker.DrainTimeout.Std()+5*time.Second, timerEvent{kind: upgradeKill}))
}

func (s *supervisor) upgradeNote() upgradeNote {
	n := upgradeNote{Generation: s.lastGen, Control: s.control.path, ControlKey: s.control.passKey,
		RuntimeDir: s.dir.path, OwnsRuntimeDir: s.dir.created}
	for _, l := range s.listeners {
		if l.passKey == "" {
			continue // could not be registered (logged then)
		}
		n.Listeners = append(n.Listeners, passedListener{
			Key: l.passKey, Name: l.name, Network: l.network, Addr: l.addr, Systemd: l.inherited, Stored: l.stored,
		})
	}
	return n
}

// signalSuccessor signals the successor being started, found by the pid
// it reported or, if it never did (a wrapper script, a hung start), as
// the child that is no worker. It reports whether one was signalled.
func (s *supervisor) signalSuccessor(sig unix.Signal) bool {
	ok := s.upg.Signal(sig)
	if !ok {
		if pid := s.successorPID(); pid > 0 {
			ok = unix.Kill(pid, sig) == nil
		}
	}
	if ok && sig == unix.SIGTERM && s.reload != nil {
		s.reload.signalled = true
	}
	return ok
}

// onUpgradeDone either reports a failed self-upgrade (this supervisor
// keeps serving) or hands over: confirm the successor to systemd, drain
// every worker, silently, and leave the sockets to the successor.
func (s *supervisor) onUpgradeDone(ev upgradeDone) {
	r := s.reload
	if r == nil || !r.upgrade {
		return
	}
	r.stopTimers()
	if ev.err != nil {
		err := ev.err
		if errors.Is(err, upgrade.ErrParentRunning) {
			err = fmt.Errorf("the baton this one took over from (pid %d) is still draining its workers: upgrade again once it has exited", s.parent)
		} else if how, ok := r.exits[ev.pid]; ok && ev.pid > 0 {
			err = fmt.Errorf("%w (%s)", err, how) // reaped here, not by the upgrader
		}
		if s.stopping {
			s.finishReload(fmt.Errorf("supervisor: self-upgrade cancelled: baton is stopping (the new baton said: %w)", err))
			s.beginStop()
			return
		}
		s.finishReload(fmt.Errorf("supervisor: self-upgrade failed, this baton keeps serving: %w", err))
		s.releaseListeners() // held back while the successor shared them
		return
	}
	if ev.pid == 0 {
		ev.pid = s.successorPID() // it did not say (not a baton of this kind?)
	}
	s.successor = ev.pid
	state := "READY=1"
	if ev.pid > 0 {
		state = fmt.Sprintf("MAINPID=%d\nREADY=1", ev.pid)
	}
	if err := s.toSystemd(state); err != nil {
		s.log.Warn("cannot tell systemd the new main pid", "err", err)
	}
	s.handedOver = true
	s.log.Info("self-upgrade done, draining this baton's workers", "new_pid", ev.pid)
	switch {
	case s.stopSignalled && !r.signalled && ev.pid > 0:
		// The stop signal was meant for the service: pass it on (once:
		// a second SIGTERM kills).
		s.log.Info("passing the stop on to the new baton", "pid", ev.pid)
		unix.Kill(ev.pid, unix.SIGTERM)
	case s.pendingSignal && ev.pid > 0:
		// A SIGHUP during the upgrade may mean a config the new baton
		// has not read: pass it on rather than lose it.
		s.log.Info("passing the reload asked for during the self-upgrade on to the new baton", "pid", ev.pid)
		unix.Kill(ev.pid, unix.SIGHUP)
	}
	s.control.close(true)
	s.drainAll("handed over to the new baton", fmt.Errorf("supervisor: a self-upgrade replaced this baton by pid %d: send the request again", ev.pid))
	s.after(barrierTimeout+successorTimeout, timerEvent{kind: handoverDeadline})
	path := s.control.path // the successor answers where this one did
	s.goTask(func() {
		// This baton exits only once systemd has switched to the new one.
		ctx, cancel := context.WithTimeout(context.Background(), barrierTimeout)
		err := systemd.Barrier(ctx)
		cancel()
		if err != nil {
			s.post(successorInfo{err: err})
			return
		}
		ctx, cancel = context.WithTimeout(context.Background(), successorTimeout)
		defer cancel()
		resp, err := Request(ctx, path, ControlRequest{Command: "stats"})
		s.post(successorInfo{st: resp.Stats, err: err})
	})
}

// onSuccessorInfo answers whoever asked for the self-upgrade.
func (s *supervisor) onSuccessorInfo(ev successorInfo) {
	r := s.reload
	if r == nil {
		return
	}
	s.reload = nil
	reply := reloadReply{Took: time.Since(r.started), Upgraded: true}
	if ev.st != nil {
		reply.PID, reply.Generation, reply.Workers = ev.st.PID, ev.st.Generation, ev.st.Workers
	} else {
		// Its control socket may be elsewhere (control.socket changed).
		reply.PID = s.successorPID()
		s.log.Warn("the new baton does not answer on this control socket", "err", ev.err)
	}
	s.log.Info("self-upgrade done: the new baton serves", "new_pid", reply.PID, "generation", reply.Generation,
		"took", reply.Took.Round(time.Millisecond))
	for _, w := range r.waiters {
		answer(w, reply)
	}
}

// successorPID finds the child that is no worker: the successor (or, very
// rarely, an orphan being reaped), 0 if none.
func (s *supervisor) successorPID() int {
	for _, pid := range childPIDs() {
		if s.workers[pid] == nil {
			return pid
		}
	}
	return 0
}

// takeFromParent takes, in a supervisor started by a self-upgrade, the
// sockets its parent passed that cfg uses: a .socket unit's by name (one
// cfg does not claim is an error, as at start), the others by address.
// The rest are closed when this supervisor is Ready.
func (s *supervisor) takeFromParent(cfg *config.Config) (*upgradeNote, error) {
	var note upgradeNote
	if err := json.Unmarshal([]byte(s.upg.Note()), &note); err != nil {
		return nil, fmt.Errorf("supervisor: self-upgrade: the previous baton's note: %w", err)
	}
	s.takingOver, s.parent = true, os.Getppid()
	s.lastGen = note.Generation
	take := func(p passedListener) (int, error) {
		fd, err := s.upg.Take(p.Key)
		if err == nil && fd < 0 {
			err = fmt.Errorf("supervisor: self-upgrade: the previous baton did not pass listener %q", p.Name)
		}
		return fd, err
	}
	var fromSystemd []systemd.Socket
	var keys []string
	for _, p := range note.Listeners {
		if p.Systemd {
			fd, err := take(p)
			if err != nil {
				closeSockets(fromSystemd)
				return nil, err
			}
			fromSystemd = append(fromSystemd, systemd.Socket{Name: p.Name, Fd: fd})
			keys = append(keys, p.Key)
			continue
		}
		c, ok := listenerAt(cfg, p)
		if p.Stored && (!ok || c.Name != p.Name) {
			// Gone, or renamed: stored again under its new name.
			s.unstore = append(s.unstore, p.Name)
		}
		if !ok {
			continue
		}
		fd, err := take(p)
		if err != nil {
			closeSockets(fromSystemd)
			return nil, err
		}
		l := &listener{name: c.Name, network: p.Network, addr: p.Addr, fd: fd, stored: p.Stored && c.Name == p.Name, passKey: p.Key}
		if p.Network == "unix" {
			l.unlink = p.Addr
		}
		s.listeners = append(s.listeners, l)
	}
	ls, err := adoptInherited(cfg.Listen, fromSystemd, s.log)
	if err != nil {
		return nil, err
	}
	for i, l := range ls {
		l.passKey = keys[i]
	}
	s.listeners = append(s.listeners, ls...)
	s.log.Info("taking over from the previous baton", "parent", s.parent, "listeners", len(s.listeners))
	return &note, nil
}

// listenerAt returns cfg's listener where p is bound, if any.
func listenerAt(cfg *config.Config, p passedListener) (config.Listener, bool) {
	for _, c := range cfg.Listen {
		if c.Network == p.Network && c.Addr == p.Addr {
			return c, true
		}
	}
	return config.Listener{}, false
}

func closeSockets(ss []systemd.Socket) {
	for _, s := range ss {
		unix.Close(s.Fd)
	}
}

// takeOver makes this supervisor, started by a self-upgrade, the one in
// charge once its first generation is ready: the parent learns it may
// hand over, systemd learns the new main pid, and this one takes on the
// control socket, systemd's watchdog and fd store.
func (s *supervisor) takeOver() {
	if err := s.upg.Ready(); err != nil {
		// The parent is gone: this one is all there is.
		s.log.Warn("cannot tell the previous baton to hand over", "err", err)
	}
	s.takingOver = false
	s.log.Info("took over from the previous baton", "parent", s.parent, "generation", s.current.n)
	// The self-upgrade was a reload, and its outcome is this one.
	s.last = reloadOutcome{at: time.Now()}
	s.status = s.statusLine()
	state := fmt.Sprintf("MAINPID=%d\nREADY=1\nSTATUS=%s", os.Getpid(), s.status)
	s.goTask(func() {
		err := s.toSystemd(state)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), barrierTimeout)
			err = systemd.Barrier(ctx)
			cancel()
		}
		if err != nil {
			s.log.Warn("systemd did not confirm the new main pid", "err", err)
		}
	})
	s.serveControl()
	s.armOwnWatchdog()
	// Drop before storing: FDSTOREREMOVE= drops every socket of a name.
	for _, name := range s.unstore {
		if err := systemd.RemoveStoredFD(name); err != nil {
			s.log.Warn("cannot remove socket from systemd's fd store", "name", name, "err", err)
		}
	}
	s.unstore = nil
	s.storeListeners(s.cfg)
	s.runPending()
}
