package supervisor

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/batonhq/baton/internal/config"
)

// reloadReply is what a reload request gets back once its reload is over.
type reloadReply struct {
	Generation int
	Workers    int
	Took       time.Duration
	Err        error
	Upgraded   bool // a self-upgrade: a new baton took over
	PID        int  // the new baton's pid (0 if unknown)
}

// reloadState is the reload under way.
type reloadState struct {
	started time.Time
	waiters []chan<- reloadReply
	upgrade bool // a self-upgrade (docs/architecture.md)
	// signalled: the successor was sent SIGTERM (deadline, or a stop).
	signalled bool
	// exits are children that were no worker, reaped during the
	// upgrade: the successor's exit status may be among them.
	exits  map[int]string
	timers []*time.Timer
}

func (r *reloadState) stopTimers() {
	for _, t := range r.timers {
		t.Stop()
	}
	r.timers = nil
}

// reloadOutcome is the last reload's result, for the status line.
type reloadOutcome struct {
	at  time.Time
	err error
}

func (o reloadOutcome) String() string {
	switch {
	case o.at.IsZero():
		return ""
	case o.err != nil:
		return fmt.Sprintf(", last reload failed %s ago: %v", time.Since(o.at).Round(time.Second), o.err)
	}
	return fmt.Sprintf(", last reload ok %s ago", time.Since(o.at).Round(time.Second))
}

// requestReload starts a reload (a self-upgrade when upgrade is set, or
// when the executable was replaced), or, while one runs (or the first
// generation is still starting), queues the request: every request queued
// meanwhile is served by one more reload after it, so reloads never
// overlap and none is lost. reply, if not nil, gets the outcome.
func (s *supervisor) requestReload(reply chan<- reloadReply, upgrade bool) {
	switch {
	case s.phase == phaseStopping:
		answer(reply, reloadReply{Err: errors.New("supervisor: baton is stopping")})
	case s.reload != nil || s.phase == phaseStarting || s.takingOver:
		s.log.Info("reload requested while another is under way: queued", "upgrade", upgrade)
		s.pending = append(s.pending, reply)
		s.pendingUpgrade = s.pendingUpgrade || upgrade
		s.pendingSignal = s.pendingSignal || reply == nil
	default:
		s.beginReload([]chan<- reloadReply{reply}, upgrade)
	}
}

// runPending starts the queued reload, if any.
func (s *supervisor) runPending() {
	if len(s.pending) == 0 || s.phase != phaseRunning || s.reload != nil || s.takingOver || s.stopping {
		return
	}
	waiters, upgrade := s.pending, s.pendingUpgrade
	s.pending, s.pendingUpgrade, s.pendingSignal = nil, false, false
	s.beginReload(waiters, upgrade)
}

// beginReload re-reads the configuration and starts the next generation
// (docs/architecture.md, "Reload"). The serving generation is untouched until the new one
// is all ready. A new baton executable on disk makes it a self-upgrade.
func (s *supervisor) beginReload(waiters []chan<- reloadReply, upgrade bool) {
	s.reload = &reloadState{started: time.Now(), waiters: waiters}
	s.sendSystemd("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec())
	if !upgrade && s.exeChanged() && s.upg != nil {
		s.log.Info("the baton executable on disk changed since start: upgrading to it")
		upgrade = true
	}
	if upgrade {
		s.beginUpgrade()
		return
	}
	s.log.Info("reloading")
	cfg, err := s.load()
	if err != nil {
		s.finishReload(fmt.Errorf("supervisor: reload: %w", err))
		return
	}
	if s.exeChanged() {
		s.log.Warn("the baton executable on disk changed since start, and this baton cannot upgrade itself (no upgrader): restart the service to run the new version")
	}
	if err := s.checkReloadable(cfg); err != nil {
		s.finishReload(fmt.Errorf("supervisor: reload: %w", err))
		return
	}
	g, err := s.newGeneration(cfg)
	if err != nil {
		s.finishReload(fmt.Errorf("supervisor: reload: %w", err))
		return
	}
	s.next = g
	s.log.Info("starting "+g.String(), "count", len(g.slots), "command", cfg.Worker.Command)
	if err := s.startGeneration(g); err != nil {
		s.abandonNext(err)
		return
	}
	s.publishStatus()
}

// exeChanged reports whether the executable a self-upgrade would run is
// no longer the running one (a package upgrade replaced the file, or
// repointed a symlink to it).
func (s *supervisor) exeChanged() bool {
	if s.exe == nil || s.exePath == "" {
		return false
	}
	fi, err := os.Stat(s.exePath)
	return err == nil && !os.SameFile(fi, s.exe)
}

// checkReloadable refuses what a reload cannot change in place.
func (s *supervisor) checkReloadable(cfg *config.Config) error {
	if cfg.Control.Socket != s.cfg.Control.Socket {
		return fmt.Errorf("control.socket: changed from %q to %q: restart baton to move the control socket", s.cfg.Control.Socket, cfg.Control.Socket)
	}
	return nil
}

// finishReload ends the reload under way (if any): it tells systemd and
// every waiter the outcome, then starts a queued reload.
func (s *supervisor) finishReload(err error) {
	r := s.reload
	if r == nil {
		return
	}
	s.reload = nil
	r.stopTimers()
	s.last = reloadOutcome{at: time.Now(), err: err}
	reply := reloadReply{Err: err, Took: time.Since(r.started)}
	if g := s.current; g != nil {
		reply.Generation, reply.Workers = g.n, len(g.slots)
	}
	switch {
	case err != nil:
		s.log.Error("reload failed; the serving generation stays", "err", err, "generation", reply.Generation)
	case !r.upgrade:
		s.log.Info("reload done", "generation", reply.Generation, "took", reply.Took.Round(time.Millisecond))
	}
	for _, w := range r.waiters {
		answer(w, reply)
	}
	if s.phase == phaseStopping || s.stopping {
		return
	}
	s.status = s.statusLine()
	s.sendSystemd("READY=1\nSTATUS=" + s.status)
	s.runPending()
}

// answerPending fails every queued request.
func (s *supervisor) answerPending(err error) {
	for _, w := range s.pending {
		answer(w, reloadReply{Err: err})
	}
	s.pending = nil
}

// answer delivers a reply; reply channels are buffered, so it never blocks.
func answer(c chan<- reloadReply, r reloadReply) {
	if c != nil {
		c <- r
	}
}
