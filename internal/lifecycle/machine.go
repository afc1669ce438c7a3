package lifecycle

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/batonhq/baton/internal/config"
)

// RespawnDelay is how long baton waits before trying again when it could
// not start a worker at all (fork or exec failed). Workers that start and
// then crash follow the restart budget's backoff instead.
const RespawnDelay = 100 * time.Millisecond

// OrphanCheckInterval is how often a stopping baton looks whether the
// orphans it signalled are gone, when no exit told it.
const OrphanCheckInterval = 200 * time.Millisecond

// MemoryCheckInterval is how often workers' resident memory is compared
// with worker.max_memory.
const MemoryCheckInterval = time.Second

// Errors the Machine ends with.
var (
	// ErrNotReady: the first generation of workers did not become ready.
	ErrNotReady = errors.New("supervisor: workers did not become ready")
	// ErrGiveUp: the restart budget was spent and restart.on_giveup is
	// "exit".
	ErrGiveUp = errors.New("supervisor: restart budget spent")
	// errStopping answers the requests a stop ends.
	errStopping = errors.New("supervisor: baton is stopping")
	// errRolledBack is wrapped by a reload's error when its new
	// generation failed and was stopped.
	errRolledBack = errors.New("supervisor: reload rolled back")
)

// phase is where baton is in its own life.
type phase int

const (
	starting          phase = iota // the first generation is not ready yet
	running                        // serving; no reload under way
	reloading                      // a new generation starts beside the serving one
	upgrading                      // a successor baton is starting (self-upgrade)
	cancellingUpgrade              // a stop came during a self-upgrade: stop once it has ended
	lameDuck                       // a stop came, with stop.delay: serving, not ready, until the drain
	stopping                       // every generation drains; exit once every child is gone
	killing                        // the stop deadline passed, or a second stop signal: SIGKILL
)

func (p phase) String() string {
	return [...]string{"starting", "running", "reloading", "upgrading", "cancelling upgrade", "lame duck", "stopping", "killing"}[p]
}

// charge says which baton speaks for the service. Only the one in charge
// talks to systemd, answers control requests, and may unlink socket
// paths or change the fd store.
type charge int

const (
	inCharge          charge = iota
	parentInCharge           // started by a self-upgrade, first generation not ready yet
	successorInCharge        // handed over to a successor: drain and exit
)

// Options are a Machine's settings besides its configuration.
type Options struct {
	// Logger receives the log; nil means slog.Default().
	Logger *slog.Logger
	// PID is this process's pid: ancestry lookups stop there.
	PID int
	// Parent, when not 0, is the baton this one takes over from (it was
	// started by that one's self-upgrade); LastGen is the newest
	// generation number that one used.
	Parent, LastGen int
	// Scaled is the count that baton's operator scaled to, which its
	// first generation keeps while worker.count is unchanged.
	Scaled Scaled
}

// Machine is the supervisor's state and every decision on it. It is not
// safe for concurrent use: one goroutine calls Start, then Step until
// Done, then Finish.
type Machine struct {
	env Env
	log *slog.Logger
	pid int

	phase  phase
	charge charge
	parent int // the baton taken over from, while parentInCharge
	// handed is the scaled count a self-upgrade handed over, for the
	// first generation.
	handed Scaled
	err    error

	// inForce is the generation whose configuration is in force: the
	// first one from the start, then each one a reload promoted.
	inForce  *generation
	lastGen  int             // number of the newest generation
	current  *generation     // serving
	next     *generation     // starting (first start, or a reload)
	draining []*generation   // old generations whose workers are leaving
	workers  map[int]*worker // every live worker process, by pid
	// orphans are the children that are no worker, signalled since baton
	// began to stop (sweepOrphans); baton exits once they are gone.
	// orphanCheck: a timer to look again is armed.
	orphans     map[int]bool
	orphanCheck bool
	// foreign are the children baton had before it started a worker (a
	// shell's process substitution, forked before the shell exec'd
	// baton): no worker's leftovers, so never signalled nor waited for.
	foreign map[int]bool
	// successor is the pid of the baton that took over, once known.
	successor int

	reload *reload // the reload under way, nil if none
	// scaling is the scale-up waiting for its new workers, nil if none;
	// stopWaiters wait for the end of a stop.
	scaling     func(Result)
	stopWaiters []func(Result)
	queued      queue // reload requests that came while one could not start
	last        outcome
	budget      budget
	counts      counts
	stopSig     int // stop signals received
	// drainAt is when a stop asked for with stop.delay drains: the end
	// of the lame duck (zero when none is pending); endDelay stops its
	// timer.
	drainAt  time.Time
	endDelay func()

	dropped int // notify messages from unknown senders
	// walks ancestry lookups were made in the second from walkSecond.
	walks      int
	walkSecond time.Time
	// exited remembers the last worker pids reaped: the notify socket and
	// the reaper are read by different goroutines, so a worker's last
	// message (STOPPING=1 as it leaves) may arrive after its exit. That is
	// no stranger's message and is not counted as dropped.
	exited [64]int
	nexit  int
	status string // the last STATUS= sent to systemd
	routed Routes // the last Routes sent to the Env
	// wdPing is how often systemd's watchdog is pinged; 0 for never.
	wdPing time.Duration
}

// New returns a Machine acting through env. Start it with Start.
func New(env Env, opts Options) *Machine {
	m := &Machine{
		env:     env,
		log:     opts.Logger,
		pid:     opts.PID,
		parent:  opts.Parent,
		lastGen: opts.LastGen,
		handed:  opts.Scaled,
		workers: map[int]*worker{},
		orphans: map[int]bool{},
		foreign: map[int]bool{},
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if opts.Parent != 0 {
		m.charge = parentInCharge
	}
	return m
}

// Start starts the first generation of workers from cfg. It fails when
// cfg's sockets cannot be opened. A worker that cannot start stops the
// service as any later failure does: Step then runs until Done, and
// Finish returns why.
func (m *Machine) Start(cfg *config.Config) error {
	g, err := m.newGeneration(cfg)
	if err != nil {
		return err
	}
	m.inForce, m.next = g, g
	for _, pid := range m.env.Children() {
		m.log.Debug("a child from before the first worker: left alone", "pid", pid)
		m.foreign[pid] = true
	}
	if err := m.startGeneration(g); err != nil {
		m.fail(err)
	}
	m.env.After(MemoryCheckInterval, Timer{kind: memoryCheck})
	if m.charge == inCharge {
		m.armOwnWatchdog()
	}
	m.route()
	return nil
}

// Step reacts to one event.
func (m *Machine) Step(ev Event) {
	switch ev := ev.(type) {
	case Exited:
		m.onExit(ev)
	case Notified:
		m.onNotify(ev)
	case ReadyLine:
		m.onReadyLine(ev)
	case Timer:
		m.onTimer(ev)
	case Command:
		ev.apply(m)
	case Loaded:
		m.onLoaded(ev)
	case UpgradeDone:
		m.onUpgradeDone(ev)
	case SuccessorInfo:
		m.onSuccessorInfo(ev)
	case Stuck:
		m.onStuck(ev)
	}
	m.route()
}

// Done reports whether baton may exit: it is stopping, every child is
// gone and, after a handover, the upgrade's requester was answered.
func (m *Machine) Done() bool {
	if m.phase != stopping && m.phase != killing {
		return false
	}
	return len(m.workers) == 0 && len(m.orphans) == 0 && !(m.charge == successorInCharge && m.reload != nil)
}

// Finish answers what is still queued and returns why baton stopped:
// nil for a stop asked for (or a handover).
func (m *Machine) Finish() error {
	m.answerQueued(errStopping)
	if m.charge == parentInCharge && m.err == nil {
		m.err = errors.New("supervisor: stopped before taking over from the previous baton")
	}
	for _, reply := range m.stopWaiters {
		reply(Result{Err: m.err})
	}
	m.stopWaiters = nil
	switch {
	case m.charge == successorInCharge:
		m.log.Info("handed over: exiting")
	case m.err == nil:
		m.log.Info("stopped")
	}
	return m.err
}

// Sharing reports whether another baton uses this one's sockets: the
// successor (starting, or in charge), or the one this one is taking over
// from. Sockets are then closed without unlinking their paths or leaving
// the fd store.
func (m *Machine) Sharing() bool {
	return m.charge != inCharge || m.phase == upgrading || m.phase == cancellingUpgrade
}

// InCharge reports whether this baton speaks for the service.
func (m *Machine) InCharge() bool { return m.charge == inCharge }

// onStop begins a stop, after stop.delay unless ev.Now. A stop signal
// (or ev.Now) during that delay skips the rest of it; a second stop
// signal once the drain has begun kills every worker.
func (m *Machine) onStop(ev Stop) {
	if ev.Reply != nil {
		m.stopWaiters = append(m.stopWaiters, ev.Reply)
	}
	if ev.Signal != "" {
		m.stopSig++
	}
	switch {
	case (ev.Signal != "" || ev.Now) && m.delaying():
		m.log.Info("stopping now: the rest of stop.delay is skipped", "signal", ev.Signal, "skipped", m.delayLeft().Round(time.Millisecond))
		m.stopNow()
		return
	case ev.Signal != "" && m.stopSig > 1:
		m.log.Warn("second stop signal: killing workers", "signal", ev.Signal)
		if m.phase != stopping && m.phase != killing {
			m.stopNow() // ends a self-upgrade under way too
		}
		m.kill()
		return
	case ev.Signal != "":
		m.log.Info("stopping", "signal", ev.Signal)
	case ev.Reply != nil:
		m.log.Info("stopping: asked on the control socket", "now", ev.Now)
	default:
		m.log.Info("stopping: context cancelled")
	}
	delay := m.config().Stop.Delay.Std()
	if ev.Now {
		delay = 0
	}
	m.beginStop(delay)
}

func (m *Machine) onTimer(t Timer) {
	switch t.kind {
	case readyDelayDone, readyHintDue:
		m.onReadyTimer(t)
	case readyDeadline:
		m.nextTimedOut(t.g)
	case respawnSlot:
		g := t.g
		if m.stoppingOrGone() || g.state == genDraining || t.slot >= len(g.slots) || g.slots[t.slot] != nil {
			return
		}
		m.refill(g, t.slot, nil, 0)
		m.publishStatus()
	case drainDeadline:
		if m.workers[t.w.pid] == t.w {
			m.log.Warn("worker did not finish draining in time, killing it", "slot", t.w.slot, "pid", t.w.pid, "drain_timeout", t.w.gen.cfg.Worker.DrainTimeout.Std())
			m.env.Signal(t.w.pid, SIGKILL, Group)
		}
	case watchdogExpired:
		if w := t.w; m.workers[w.pid] == w && t.seq == w.wdSeq {
			m.replaceFirst(w, "watchdog", fmt.Sprintf("sent no WATCHDOG=1 for %s", w.gen.cfg.Worker.Watchdog.Std()), SIGKILL)
		}
	case memoryCheck:
		m.checkMemory()
	case ownWatchdog:
		if m.charge == successorInCharge {
			return // the successor pings now
		}
		// Not sendSystemd: while a successor starts (Sharing), this
		// baton is still the one systemd's watchdog counts on, and a
		// successor may take longer than WatchdogSec to take over.
		m.env.Notify("WATCHDOG=1")
		m.env.After(m.wdPing, t)
	case handoverDeadline:
		if m.charge == successorInCharge && m.reload != nil {
			m.onSuccessorInfo(SuccessorInfo{Err: errors.New("the new baton did not answer")})
		}
	case upgradeDeadline, upgradeKill:
		m.onUpgradeDeadline(t.kind == upgradeKill)
	case scaleDeadline:
		m.scaleTimedOut(t.g)
	case orphanCheck:
		m.orphanCheck = false
		m.sweepOrphans()
	case stopDelayDone:
		if m.phase == lameDuck {
			m.log.Info("stop.delay is over: draining")
			m.stopNow()
		}
	case stopDeadline:
		if len(m.workers) > 0 {
			m.log.Warn("drain timed out, killing workers", "left", len(m.workers))
		}
		m.kill()
	}
}

// stoppingOrGone reports whether no worker may start again.
func (m *Machine) stoppingOrGone() bool { return m.phase == stopping || m.phase == killing }

// armOwnWatchdog starts pinging systemd's watchdog when WatchdogSec= is
// set. The pings come from the loop itself, so a loop that hangs stops
// them and systemd restarts baton.
func (m *Machine) armOwnWatchdog() {
	d := m.env.WatchdogInterval(m.parent)
	if d <= 0 {
		return
	}
	m.wdPing = d
	m.log.Info("pinging systemd's watchdog", "every", d)
	m.sendSystemd("WATCHDOG=1")
	m.env.After(d, Timer{kind: ownWatchdog})
}

// fail records why the service cannot run and stops it, with no delay:
// stop.delay is for the stops asked for.
func (m *Machine) fail(err error) {
	if m.err == nil {
		m.err = err
		m.log.Error("giving up", "err", err)
	}
	m.beginStop(0)
}

// beginStop tells systemd and every worker that the service is stopping.
// Baton is done once every worker has exited; the drain deadline of each
// worker's generation kills the rest. With a delay, and a generation
// that serves, baton is a lame duck first (lameDuck). During a
// self-upgrade the stop waits for the upgrade's end, the successor asked
// to give up; the delay counts from now.
func (m *Machine) beginStop(delay time.Duration) {
	switch m.phase {
	case lameDuck:
		if delay == 0 {
			m.stopNow()
		}
		return
	case stopping, killing:
		return
	case cancellingUpgrade:
		if delay == 0 {
			m.drainAt = time.Time{}
		}
		return
	case upgrading:
		if delay > 0 {
			m.drainAt = m.env.Now().Add(delay)
		}
		// The successor shares every socket and may be about to take
		// over: ask it to give up (it drains what it started), and stop
		// once the upgrade has ended, one way or the other.
		m.phase = cancellingUpgrade
		if m.reload.successorTermed || m.signalSuccessor(SIGTERM) {
			m.log.Info("stopping: the self-upgrade under way is cancelled")
		} else {
			m.log.Info("stopping once the self-upgrade under way has ended")
		}
		return
	}
	if delay > 0 && m.current != nil {
		m.becomeLameDuck(m.env.Now().Add(delay))
		return
	}
	m.stopNow()
}

// delaying reports whether a stop is in its stop.delay: baton is a lame
// duck, or will be once the self-upgrade under way has ended.
func (m *Machine) delaying() bool {
	return m.phase == lameDuck || m.phase == cancellingUpgrade && m.env.Now().Before(m.drainAt)
}

// becomeLameDuck keeps baton serving until drainAt without saying it is
// ready, so that load balancers stop sending it connections before its
// listeners close (docs/architecture.md, "Stop"). A reload under way is
// rolled back (its new workers drain, the serving generation stays), the
// requests waiting are answered, and nothing else changes: the listeners
// stay open, the workers keep accepting, a crashed one is replaced. At
// drainAt, or on a stop signal, every generation drains (stopNow).
func (m *Machine) becomeLameDuck(drainAt time.Time) {
	m.phase = lameDuck
	m.drainAt = drainAt
	m.endScaling(errStopping)
	m.stopReload()
	m.answerQueued(errStopping)
	left := drainAt.Sub(m.env.Now())
	m.endDelay = m.env.After(left, Timer{kind: stopDelayDone})
	m.log.Info("lame duck: serving, not ready, until the drain", "drain_in", left.Round(time.Millisecond))
	m.status = m.statusLine()
	// systemd counts the delay against TimeoutStopSec= too.
	m.sendSystemd(fmt.Sprintf("STOPPING=1\nSTATUS=%s\nEXTEND_TIMEOUT_USEC=%d", m.status, (left + m.longestDrain() + 5*time.Second).Microseconds()))
}

// stopNow stops at once: no self-upgrade, no reload, every generation
// drains.
func (m *Machine) stopNow() {
	if m.endDelay != nil {
		m.endDelay()
		m.endDelay = nil
	}
	m.drainAt = time.Time{}
	m.env.NoMoreUpgrades()
	m.endScaling(errStopping)
	m.phase = stopping // no queued reload starts now; no successor shares
	m.sendSystemd("STOPPING=1")
	m.finishReload(errStopping)
	m.drainAll("stopping", errStopping)
}

// drainAll drains every generation and closes baton's copies of the
// sockets: no worker will start again.
func (m *Machine) drainAll(why string, queuedErr error) {
	if m.phase != killing {
		m.phase = stopping
	}
	longest := m.longestDrain()
	for _, g := range m.generations() {
		if g.state != genDraining {
			m.drainGeneration(g, why)
		}
	}
	m.current, m.next = nil, nil
	m.answerQueued(queuedErr)
	// Closing the sockets now lets each one close as soon as the draining
	// workers have closed theirs: a new client is refused at once instead
	// of waiting in a queue nobody accepts from until baton exits. A
	// socket from systemd stays open in systemd, its queue kept for the
	// next start; after a handover the successor holds them all.
	m.env.CloseAll(m.Sharing())
	m.sweepOrphans()
	m.env.After(longest, Timer{kind: stopDeadline})
	if len(m.workers) > 0 {
		// A drain longer than TimeoutStopSec= must not be cut by systemd.
		m.sendSystemd(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", (longest + 5*time.Second).Microseconds()))
	}
}

// longestDrain is the longest drain_timeout of the generations left.
func (m *Machine) longestDrain() time.Duration {
	var longest time.Duration
	for _, g := range m.generations() {
		longest = max(longest, g.cfg.Worker.DrainTimeout.Std())
	}
	return longest
}

// kill kills every worker and, once baton is stopping, every orphan.
func (m *Machine) kill() {
	if m.phase == stopping {
		m.phase = killing
	}
	for _, w := range m.live() {
		m.env.Signal(w.pid, SIGKILL, Group)
	}
	m.sweepOrphans()
}

// sendSystemd notifies systemd, unless another baton speaks for the
// service: the one being taken over, or the successor.
func (m *Machine) sendSystemd(state string) {
	if !m.Sharing() {
		m.env.Notify(state)
	}
}

// generations returns every generation that still has workers or is
// about to: the draining ones, the serving one and the starting one.
func (m *Machine) generations() []*generation {
	gs := append([]*generation(nil), m.draining...)
	if m.current != nil {
		gs = append(gs, m.current)
	}
	if m.next != nil {
		gs = append(gs, m.next)
	}
	return gs
}

// live returns every live worker, in the order they started: the Machine
// decides the same way each time for the same events.
func (m *Machine) live() []*worker {
	ws := make([]*worker, 0, len(m.workers))
	for _, w := range m.workers {
		ws = append(ws, w)
	}
	slices.SortFunc(ws, func(a, b *worker) int {
		if c := a.started.Compare(b.started); c != 0 {
			return c
		}
		return cmp.Compare(a.pid, b.pid)
	})
	return ws
}

// config is the configuration in force.
func (m *Machine) config() *config.Config { return m.inForce.cfg }

func itoa(n int) string { return strconv.Itoa(n) }
