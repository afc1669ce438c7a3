package lifecycle

import (
	"time"

	"github.com/batonhq/baton/internal/config"
)

// Event is what Step takes: one of the types below.
type Event interface{ event() }

// Command is an event an operator asks for (a control command, or the
// signal standing for one): Reload, Stop, Restart, Scale. Each carries
// its handler (apply, in operator.go), so that a new control command is
// its row in control.Commands and its event here, with no case in Step.
type Command interface {
	Event
	apply(m *Machine)
}

// Exited: a child was reaped (a worker, an orphan, or the successor of
// an earlier self-upgrade; never the one of an upgrade under way, which
// the upgrader waits for). How says how it ended ("exit status 1").
type Exited struct {
	PID int
	How string
}

// Notified: a datagram on the notify socket from PID, parsed.
type Notified struct {
	PID, UID int
	Fields   map[string]string
}

// ReadyLine: worker PID wrote a line to its readiness pipe
// (Spawn.ReadyPipe, ready = "fd").
type ReadyLine struct{ PID int }

// Reload asks for a reload (Upgrade: a self-upgrade). Reply, if not nil,
// gets the outcome once the reload is over; nil when it came from a
// signal. Reply must not block.
type Reload struct {
	Upgrade bool
	Reply   func(Result)
}

// Stop asks baton to drain and exit, after stop.delay unless Now. Signal
// names the signal it came from ("" when not from one: a cancelled
// context, or a control request); a stop signal during stop.delay skips
// the rest of it, and a second one during the drain kills every worker
// at once. Reply, if not nil, gets the outcome once every worker is gone
// (Finish).
type Stop struct {
	Signal string
	Now    bool
	Reply  func(Result)
}

// Restart replaces the serving worker of Slot: a new one first, then the
// old one drains. Reply gets the outcome once the new one is ready.
type Restart struct {
	Slot  int
	Reply func(Result)
}

// Scale sets the serving generation's number of workers to N (to the
// current number plus N when Relative; N may be negative): new workers
// start, readiness-gated; the extras drain. The count holds across
// reloads and self-upgrades until worker.count changes (Scaled). Reply
// gets the outcome once every worker of the new count is ready.
type Scale struct {
	N        int
	Relative bool
	Reply    func(Result)
}

// Loaded: the configuration Systemd.Load read (validated), or why it
// could not.
type Loaded struct {
	Config *config.Config
	Err    error
}

// UpgradeDone: the self-upgrade started by Upgrades.Upgrade ended. Err
// is nil when the successor took over; ParentRunning: it could not even
// start because the baton this one took over from is still there.
type UpgradeDone struct {
	PID           int
	Err           error
	ParentRunning bool
}

// SuccessorInfo: what the successor answered after a handover, or why
// it did not.
type SuccessorInfo struct {
	PID, Generation, Workers int
	Err                      error
}

// Result is the outcome of a reload.
type Result struct {
	Generation int
	Workers    int
	Took       time.Duration
	Err        error
	Upgraded   bool // a self-upgrade: a new baton took over
	PID        int  // the new baton's pid (0 if unknown)
}

// Stuck: round-robin found that worker PID left a connection it was
// passed unread on its channel for Unread (worker.channel_timeout, or a
// little more). The shell passes it no more connections and passed those
// it had not read to other workers (docs/balancing.md).
type Stuck struct {
	PID    int
	Unread time.Duration
}

// Timer is an event the Machine armed through Env.After.
type Timer struct {
	kind timerKind
	w    *worker     // readyDelayDone, readyHintDue, drainDeadline, watchdogExpired
	g    *generation // readyDeadline, respawnSlot
	slot int         // respawnSlot
	seq  int         // watchdogExpired
}

type timerKind int

const (
	readyDelayDone   timerKind = iota // a delay-ready worker stayed up long enough
	readyHintDue                      // a worker is starting for ReadyHintAfter: say what baton waits for
	readyDeadline                     // a generation's time to become ready ran out
	respawnSlot                       // time to refill an empty slot
	drainDeadline                     // a draining worker's time is up
	stopDeadline                      // the drain on stop ran out of time
	watchdogExpired                   // a worker sent no WATCHDOG=1 for worker.watchdog
	ownWatchdog                       // time to tell systemd baton is alive (WatchdogSec=)
	handoverDeadline                  // the successor did not answer after taking over
	upgradeDeadline                   // the successor neither took over nor gave up: SIGTERM
	upgradeKill                       // nor after SIGTERM: SIGKILL
	memoryCheck                       // time to compare workers' memory with worker.max_memory
	scaleDeadline                     // a scale-up's workers are not all ready in reload.timeout
	orphanCheck                       // time to see whether the orphans signalled are gone
	stopDelayDone                     // a stop's stop.delay is over: drain
)

func (Exited) event()        {}
func (Notified) event()      {}
func (ReadyLine) event()     {}
func (Reload) event()        {}
func (Stop) event()          {}
func (Restart) event()       {}
func (Scale) event()         {}
func (Loaded) event()        {}
func (UpgradeDone) event()   {}
func (SuccessorInfo) event() {}
func (Stuck) event()         {}
func (Timer) event()         {}
