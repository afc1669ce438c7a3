package systemd

import (
	"fmt"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notify sends state (newline-separated KEY=VALUE lines) to the service
// manager named by $NOTIFY_SOCKET. It is a no-op when that is unset, as it
// is outside systemd. The variable is left in place, so later messages
// (and a re-executed baton) can still reach systemd.
func Notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("systemd: notify: %w", err)
	}
	return nil
}

// WatchdogInterval returns systemd's watchdog timeout for this process
// (WatchdogSec=, from WATCHDOG_USEC when WATCHDOG_PID is this process or
// unset), or 0 when there is none. The variables stay in the environment.
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("systemd: watchdog: %w", err)
	}
	return d, nil
}
