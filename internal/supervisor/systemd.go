package supervisor

import (
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/lifecycle"
	"github.com/batonhq/baton/internal/systemd"
)

// serviceManager is the supervisor's part that carries out
// lifecycle.Systemd: what baton tells systemd, and reading the
// configuration. What baton keeps in systemd's fd store is the sockets'
// (sockets.go); the notify socket the workers report to is the
// processes' (processes.go).
type serviceManager struct {
	// toSystemd sends a state to systemd.
	toSystemd func(string) error
	// load reads the configuration for a reload.
	load func() (*config.Config, error)
}

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
