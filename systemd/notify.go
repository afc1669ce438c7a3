package systemd

import (
	"fmt"

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
