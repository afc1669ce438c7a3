package lifecycle

import (
	"time"

	"github.com/batonhq/baton/internal/config"
)

// Env is how the Machine acts on the world. Every call is made from the
// goroutine that calls Step, and none may block for long: what takes
// time (a self-upgrade, a round trip to the successor) is started here
// and reported back as an event.
type Env interface {
	// Now is the clock every decision uses.
	Now() time.Time
	// After delivers t to Step once d has passed, unless stop was
	// called first.
	After(d time.Duration, t Timer) (stop func())

	Processes
	Sockets
	Systemd
	Upgrades
}

// Processes starts, signals and inspects processes.
type Processes interface {
	// Start starts the worker of a generation's slot, with the sockets
	// cfg names (opened by Sockets.Open), and returns its pid.
	Start(w Spawn) (pid int, err error)
	// Signal sends sig to pid (To: Process), to its process group
	// (Group), or to both when pid leads a group (Orphan).
	Signal(pid int, sig Signal, to Target)
	// Children lists this process's children, zombies included.
	Children() []int
	// ParentOf returns pid's parent, 0 if unknown.
	ParentOf(pid int) int
	// RSS returns pid's resident memory in bytes, 0 if unknown.
	RSS(pid int) int64
}

// Sockets opens and closes the listening sockets.
type Sockets interface {
	// Open makes sure every socket cfg names is open (binding the
	// missing ones); store: may put new ones in systemd's fd store.
	Open(cfg *config.Config, store bool) error
	// Release closes the self-bound sockets that none of inUse names;
	// inForce is the configuration in force (its fd store setting).
	Release(inUse []*config.Config, inForce *config.Config)
	// CloseAll closes baton's copies of every socket (at stop);
	// shared: another baton uses them, so paths and the fd store stay.
	CloseAll(shared bool)
	// Route says where new connections go from now on (worker.balance);
	// it is called whenever that changed.
	Route(r Routes)
	// DrainsAccepted says that the worker pid (or a process that speaks
	// for it) said X_BATON_DRAINS_ACCEPTED=1: told to stop, it serves what
	// it accepted and has not read, so its signal need not wait for it to
	// read them (reuseport).
	DrainsAccepted(pid int)
}

// Routes is where new connections go.
type Routes struct {
	// Ready are the workers that take new connections (ready, not
	// draining), by generation and slot: round-robin passes them
	// connections in this order.
	Ready []int
	// Slots are the slots that have a worker not draining or will be
	// refilled: with reuseport, a socket a worker of another slot left
	// with connections waiting is closed (its queue moves to the
	// others), one of these slots' is kept for the replacement.
	Slots []int
	// Shared is set while another baton uses the sockets (a self-upgrade
	// under way or just done): none may be closed.
	Shared bool
}

// Systemd talks to the service manager and reads the configuration.
type Systemd interface {
	// Notify sends state to systemd (errors are logged, not returned);
	// RELOADING=1 gets the MONOTONIC_USEC= systemd wants with it.
	Notify(state string)
	// WatchdogInterval is how often to ping systemd's watchdog
	// (half of WatchdogSec=), 0 for never; parent is the pid systemd's
	// WATCHDOG_PID may name instead of this process.
	WatchdogInterval(parent int) time.Duration
	// Load starts re-reading the configuration, for a reload, off the
	// loop: what is at its path may be slow to read, or no file at all.
	// A Loaded event follows.
	Load()
}

// Upgrades replaces this baton by a new process of its executable.
type Upgrades interface {
	// CanUpgrade says why this baton cannot replace itself, nil if it
	// can.
	CanUpgrade() error
	// ExeChanged reports whether the executable on disk is no longer
	// the running one.
	ExeChanged() bool
	// Upgrade starts the successor, passing it every socket, lastGen
	// and the scaled count it keeps (Options of its Machine); an
	// UpgradeDone event follows unless it returns an error.
	Upgrade(lastGen int, scaled Scaled) error
	// SignalSuccessor signals the successor being started; false if
	// none could be found.
	SignalSuccessor(sig Signal) bool
	// NoMoreUpgrades refuses upgrades from now on and kills a successor
	// being started.
	NoMoreUpgrades()
	// Serving tells the upgrader this baton serves (it may upgrade from
	// now on, and a parent may hand over to it).
	Serving()
	// HandOver confirms the successor (pid, 0 if unknown) to systemd,
	// stops answering control requests and asks the successor how it
	// is: a SuccessorInfo event follows.
	HandOver(pid int)
	// TakeOver makes this baton, started by a self-upgrade, the one in
	// charge: systemd learns its pid (with status), it answers control
	// requests and keeps cfg's sockets in the fd store.
	TakeOver(status string, cfg *config.Config)
}

// Spawn is what Processes.Start needs to start a worker.
type Spawn struct {
	Generation int
	Slot       int
	Config     *config.Config
	// Replaces is the worker this one replaces while it still runs (it
	// said STOPPING=1, missed its watchdog, is restarted or replaced for
	// its memory), 0 for none: it gets a signal once this one is ready.
	Replaces int
	// ReadyPipe: give the worker a pipe to write a line to once it is
	// ready, its write end named by BATON_READY_FD; the line is a
	// ReadyLine event.
	ReadyPipe bool
}

// Signal is a signal the Machine sends.
type Signal int

// The signals the Machine sends.
const (
	SIGTERM Signal = iota + 1
	SIGKILL
	SIGHUP
)

func (s Signal) String() string {
	switch s {
	case SIGTERM:
		return "SIGTERM"
	case SIGKILL:
		return "SIGKILL"
	case SIGHUP:
		return "SIGHUP"
	}
	return "signal " + itoa(int(s))
}

// Target says who a Signal goes to.
type Target int

// Targets of Processes.Signal.
const (
	Process Target = iota // the process alone
	Group                 // its process group
	Orphan                // the process, and its group if it leads one
)
