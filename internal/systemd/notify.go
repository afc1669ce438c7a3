package systemd

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/batonhq/baton/internal/excerpt"
)

// MaxStatus is the most of a STATUS= text Notify sends. A status is a
// line for `systemctl status`; one as long as the error it may quote
// would make the datagram too large to send, and the READY=1 sent with
// it would be lost.
const MaxStatus = 1024

// Notify sends state (newline-separated KEY=VALUE lines) to the service
// manager named by $NOTIFY_SOCKET. It is a no-op when that is unset, as it
// is outside systemd. The variable is left in place, so later messages
// (and a re-executed baton) can still reach systemd. A STATUS= longer
// than MaxStatus is cut.
func Notify(state string) error {
	if _, err := daemon.SdNotify(false, cutStatus(state)); err != nil {
		return fmt.Errorf("systemd: notify: %w", err)
	}
	return nil
}

// cutStatus cuts the STATUS= of state to MaxStatus bytes, marked.
func cutStatus(state string) string {
	if len(state) <= MaxStatus {
		return state
	}
	lines := strings.Split(state, "\n")
	for i, l := range lines {
		if v, ok := strings.CutPrefix(l, "STATUS="); ok {
			lines[i] = "STATUS=" + excerpt.Cut(v, MaxStatus)
		}
	}
	return strings.Join(lines, "\n")
}

// WatchdogFor returns systemd's watchdog timeout (WatchdogSec=, from
// WATCHDOG_USEC) when it is meant for this process: WATCHDOG_PID unset or
// this pid, or parent, the pid of the supervisor this one took over from
// and inherited its environment from (0 if none). 0 means no watchdog. The
// variables stay in the environment.
func WatchdogFor(parent int) (time.Duration, error) {
	usec := os.Getenv("WATCHDOG_USEC")
	if usec == "" {
		return 0, nil
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return 0, fmt.Errorf("systemd: watchdog: WATCHDOG_PID=%q is not a pid", p)
		}
		if pid != os.Getpid() && (parent <= 0 || pid != parent) {
			return 0, nil
		}
	}
	n, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("systemd: watchdog: WATCHDOG_USEC=%q is not a positive number of microseconds", usec)
	}
	return time.Duration(n) * time.Microsecond, nil
}
