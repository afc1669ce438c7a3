package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/internal/lifecycle"
	"github.com/batonhq/baton/internal/systemd"
	"github.com/batonhq/baton/internal/upgrade"
)

// The supervisor is the Machine's lifecycle.Env: each method below is an
// action the Machine decided on, carried out here. They run on the loop's
// goroutine; what takes time runs in a task that posts its outcome.

var _ lifecycle.Env = (*supervisor)(nil)

func (s *supervisor) Now() time.Time { return time.Now() }

func (s *supervisor) After(d time.Duration, t lifecycle.Timer) func() {
	tm := time.AfterFunc(d, func() { s.post(t) })
	return func() { tm.Stop() }
}

func unixSignal(sig lifecycle.Signal) unix.Signal {
	switch sig {
	case lifecycle.SIGTERM:
		return unix.SIGTERM
	case lifecycle.SIGKILL:
		return unix.SIGKILL
	case lifecycle.SIGHUP:
		return unix.SIGHUP
	}
	panic("supervisor: unknown signal " + sig.String())
}

func (s *supervisor) Signal(pid int, sig lifecycle.Signal, to lifecycle.Target) {
	if s.rr != nil {
		// Every signal a worker gets ends its share of connections, before
		// it can act on it.
		s.rr.Detach(pid)
	}
	s.forget(pid)
	if s.groups.Leave(pid, sig) {
		// Its sockets get no new connection: it is told once it has
		// accepted what waits in them.
		s.signalDrained(pid, func() { s.kill(pid, sig, to) })
		return
	}
	s.kill(pid, sig, to)
}

func (s *supervisor) kill(pid int, sig lifecycle.Signal, to lifecycle.Target) {
	us := unixSignal(sig)
	switch to {
	case lifecycle.Group:
		unix.Kill(-pid, us)
	case lifecycle.Orphan:
		if pgid, err := unix.Getpgid(pid); err == nil && pgid == pid {
			unix.Kill(-pid, us)
		}
		unix.Kill(pid, us)
	default:
		unix.Kill(pid, us)
	}
}

func (s *supervisor) Children() []int      { return childPIDs() }
func (s *supervisor) ParentOf(pid int) int { return parentPID(pid) }
func (s *supervisor) RSS(pid int) int64    { return processRSS(pid) }

func (s *supervisor) Notify(state string) {
	if strings.HasPrefix(state, "RELOADING=1") {
		state += "\n" + daemon.SdNotifyMonotonicUsec()
	}
	if err := s.toSystemd(state); err != nil {
		s.log.Warn("cannot notify systemd", "err", err)
	}
}

// WatchdogInterval reads WatchdogSec= from the environment. A baton
// started by a self-upgrade inherited WATCHDOG_PID naming its parent; once
// in charge it takes the watchdog over, and names itself for its own
// successor.
func (s *supervisor) WatchdogInterval(parent int) time.Duration {
	d, err := systemd.WatchdogFor(parent)
	if err != nil {
		s.log.Warn("ignoring systemd's watchdog setting", "err", err)
		return 0
	}
	if d <= 0 {
		return 0
	}
	os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	return d / 2
}

// Load reads the configuration in a goroutine of its own, not a task: a
// read stuck on a dead network file system must not keep baton from
// exiting. It ends when the read returns; its event is dropped once the
// loop has ended.
func (s *supervisor) Load() {
	go func() {
		cfg, err := s.load()
		s.post(lifecycle.Loaded{Config: cfg, Err: err})
	}()
}

func (s *supervisor) CanUpgrade() error {
	switch {
	case s.upg == nil:
		return errors.New("supervisor: self-upgrade: not possible here (only `baton run` can replace itself)")
	case os.Getpid() == 1:
		// Its exit would end the container, successor and all.
		return errors.New("supervisor: self-upgrade: baton is PID 1 here; restart the container to run a new version")
	}
	return nil
}

// ExeChanged reports whether the executable a self-upgrade would run is
// no longer the running one (a package upgrade replaced the file, or
// repointed a symlink to it).
func (s *supervisor) ExeChanged() bool {
	if s.exe == nil || s.exePath == "" {
		return false
	}
	fi, err := os.Stat(s.exePath)
	return err == nil && !os.SameFile(fi, s.exe)
}

func (s *supervisor) Upgrade(lastGen int, scaled lifecycle.Scaled) error {
	err := s.passListeners(false)
	var b []byte
	if err == nil {
		n := s.upgradeNote(lastGen, s.balance)
		n.Scaled, n.ScaledFrom = scaled.Workers, scaled.Config
		b, err = json.Marshal(n)
	}
	if err != nil {
		return err
	}
	s.groups.LeaveFree()
	s.log.Info("self-upgrade: starting a new baton", "executable", os.Args[0])
	note := string(b)
	// tableflip waits for the new baton itself: the reaper leaves it be.
	s.reaper.spareOthers(true)
	s.goTask(func() {
		pid, err := s.upg.Upgrade(note)
		s.reaper.spareOthers(false)
		s.post(lifecycle.UpgradeDone{PID: pid, Err: err, ParentRunning: errors.Is(err, upgrade.ErrParentRunning)})
	})
	return nil
}

func (s *supervisor) SignalSuccessor(sig lifecycle.Signal) bool {
	return s.upg != nil && s.upg.Signal(unixSignal(sig))
}

func (s *supervisor) NoMoreUpgrades() {
	if s.upg != nil {
		s.upg.Stop()
	}
}

func (s *supervisor) Serving() {
	if s.upg == nil {
		return
	}
	// Until then tableflip refuses to upgrade.
	if err := s.upg.Ready(); err != nil {
		s.log.Warn("self-upgrades will not work", "err", err)
	}
}

// HandOver tells systemd the successor is the main process (so that
// NotifyAccess=main works as well as all), leaves the control socket to
// it, and asks it how it is once systemd has switched.
func (s *supervisor) HandOver(pid int) {
	state := "READY=1"
	if pid > 0 {
		state = fmt.Sprintf("MAINPID=%d\nREADY=1", pid)
	}
	if err := s.toSystemd(state); err != nil {
		s.log.Warn("cannot tell systemd the new main pid", "err", err)
	}
	s.groups.HandedOver = true // its workers are steered by the successor now
	s.control.close(true)
	s.metrics.close()
	path := s.control.path // the successor answers where this one did
	s.goTask(func() {
		// This baton exits only once systemd has switched to the new one.
		ctx, cancel := context.WithTimeout(context.Background(), lifecycle.BarrierTimeout)
		err := systemd.Barrier(ctx)
		cancel()
		if err != nil {
			s.post(lifecycle.SuccessorInfo{Err: err})
			return
		}
		ctx, cancel = context.WithTimeout(context.Background(), lifecycle.SuccessorTimeout)
		defer cancel()
		st, err := control.Client{Path: path}.Stats(ctx)
		info := lifecycle.SuccessorInfo{Err: err}
		if err == nil {
			info.PID, info.Generation, info.Workers = st.PID, st.Generation, st.Workers
		}
		s.post(info)
	})
}

// TakeOver makes this baton, started by a self-upgrade, the one in
// charge: the parent learns it may hand over, systemd learns the new
// main pid, and this one takes on the control socket and the fd store.
func (s *supervisor) TakeOver(status string, cfg *config.Config) {
	if err := s.upg.Ready(); err != nil {
		// The parent is gone: this one is all there is.
		s.log.Warn("cannot tell the previous baton to hand over", "err", err)
	}
	s.parent = 0
	s.groups.Parent = false
	state := fmt.Sprintf("MAINPID=%d\nREADY=1\nSTATUS=%s", os.Getpid(), status)
	s.goTask(func() {
		err := s.toSystemd(state)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), lifecycle.BarrierTimeout)
			err = systemd.Barrier(ctx)
			cancel()
		}
		if err != nil {
			s.log.Warn("systemd did not confirm the new main pid", "err", err)
		}
	})
	s.serveControl()
	s.serveMetrics()
	// Drop before storing: FDSTOREREMOVE= drops every socket of a name.
	for _, name := range s.unstore {
		if err := systemd.RemoveStoredFD(name); err != nil {
			s.log.Warn("cannot remove socket from systemd's fd store", "name", name, "err", err)
		}
	}
	s.unstore = nil
	s.storeListeners(cfg)
}
