package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/logbuf"
	"github.com/batonhq/baton/internal/spawn"
	"github.com/batonhq/baton/internal/systemd"
	"github.com/batonhq/baton/internal/upgrade"
)

// RespawnDelay is how long baton waits before trying again when it could
// not start a worker at all (fork or exec failed). Workers that start and
// then crash follow the restart budget's backoff instead.
const RespawnDelay = 100 * time.Millisecond

// selfExe is the running executable, even once its file was replaced.
const selfExe = "/proc/self/exe"

// ErrNotReady is wrapped by the error Run returns when the first generation
// of workers did not become ready.
var ErrNotReady = errors.New("supervisor: workers did not become ready")

// Options are the parts of a run that are not configuration. The zero
// value is usable.
type Options struct {
	// Logger receives baton's own log; nil means slog.Default().
	Logger *slog.Logger
	// Signals delivers SIGTERM and SIGINT (stop: drain, then exit; a second
	// one kills the workers at once) and SIGHUP (reload). Run does not
	// subscribe to signals itself, so tests and embedders choose.
	Signals <-chan os.Signal
	// Load re-reads the configuration for a reload; nil means reloads
	// reuse the configuration Run was given.
	Load func() (*config.Config, error)
	// Shim is the argv prefix that runs spawn.ExecWorker; nil means this
	// executable with "exec-worker --".
	Shim []string
	// Output receives the workers' output lines, one Write per line. It
	// must not block, or a worker flooding its output stalls behind it:
	// give baton's standard error through a logbuf.Writer's Bulk, as the
	// baton command does (its own log lines go to the Writer itself). nil
	// means os.Stderr through one, flushed when Run returns.
	Output io.Writer
	// Notify sends a message to systemd; nil means systemd.Notify.
	Notify func(state string) error
	// RuntimeDir holds the notify socket; empty means $RUNTIME_DIRECTORY,
	// else a new private directory (see openRuntimeDir), removed at the
	// end.
	RuntimeDir string
	// Inherited are the sockets passed by systemd; nil means
	// systemd.Inherited() is called.
	Inherited []systemd.Socket
	// Upgrader replaces this baton by a new process of its executable
	// (self-upgrade) and, in a process it started, passes the sockets on;
	// nil means self-upgrades are refused.
	Upgrader *upgrade.Upgrader
	// Version is reported by stats and logged at start.
	Version string
}

// event is anything the loop reacts to.
type event any

type timerKind int

const (
	readyDelayDone   timerKind = iota // a delay-ready worker stayed up long enough
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
)

// MemoryCheckInterval is how often workers' resident memory is compared
// with worker.max_memory.
const MemoryCheckInterval = time.Second

type timerEvent struct {
	kind timerKind
	w    *worker     // readyDelayDone, drainDeadline
	g    *generation // readyDeadline, respawnSlot
	slot int         // respawnSlot
	seq  int         // watchdogExpired
}

type notifyEvent struct{ msg systemd.Message }

type phase int

const (
	phaseStarting phase = iota // the first generation is not ready yet
	phaseRunning
	phaseStopping
)

const (
	sigkill = unix.SIGKILL
	sigterm = unix.SIGTERM
)

type supervisor struct {
	cfg  *config.Config // the configuration in force (the serving generation's)
	load func() (*config.Config, error)
	log  *slog.Logger
	// toSystemd sends a state to systemd; fromWorkers is the notify
	// socket the workers send theirs to.
	toSystemd func(string) error
	shim      []string
	out       *lineWriter
	// closeOut flushes the output buffer baton made itself, if any.
	closeOut func()
	// exePath is the executable a self-upgrade runs; exe is the running
	// one, to notice a package upgrade replaced it.
	exePath string
	exe     os.FileInfo

	listeners   []*listener
	fromWorkers *systemd.NotifyServer
	control     *controlServer
	spawner     *spawn.Spawner
	devNull     int

	events  chan event
	quit    chan struct{} // closed when the loop ends: timers and readers stop sending
	tasks   sync.WaitGroup
	outputs sync.WaitGroup
	// readers are the output pipes whose forwarders are still running.
	readersMu sync.Mutex
	readers   map[*os.File]bool

	phase    phase
	err      error
	lastGen  int                  // number of the newest generation
	current  *generation          // serving
	next     *generation          // starting (first start, or a reload)
	draining []*generation        // old generations whose workers are leaving
	workers  map[int]*worker      // every live worker process, by pid
	reload   *reloadState         // the reload under way, nil if none
	pending  []chan<- reloadReply // reload requests that came during one
	// pendingUpgrade: one of the pending requests asked for a self-upgrade;
	// pendingSignal: one came from a signal (no one waits for its answer).
	pendingUpgrade, pendingSignal bool
	last                          reloadOutcome
	restarts                      int
	// restartTimes are the unplanned restarts within restart.window.
	restartTimes []time.Time
	gaveUp       bool // the restart budget was spent
	dropped      int  // notify messages from unknown senders
	// walks ancestry lookups were made in the second from walkSecond.
	walks      int
	walkSecond time.Time
	// exited remembers the last worker pids reaped: the notify socket and
	// the reaper are read by different goroutines, so a worker's last
	// message (STOPPING=1 as it leaves) may arrive after its exit. That is
	// no stranger's message and is not counted as dropped.
	exited [64]int
	nexit  int
	status string
	// wdPing is how often systemd's watchdog is pinged (half of
	// WatchdogSec=); 0 when systemd set none.
	wdPing time.Duration

	upg     *upgrade.Upgrader
	version string
	dir     runtimeDir // notify and (by default) control socket
	// takingOver is set in a supervisor started by a self-upgrade until
	// it has told systemd it is the main process and its parent that it
	// is ready; parent is that supervisor's pid. Until then it says
	// nothing to systemd and leaves shared sockets and paths alone.
	takingOver bool
	parent     int
	// handedOver is set once a successor took over: this supervisor
	// drains its workers and exits, silent towards systemd, leaving the
	// sockets and their paths to the successor.
	handedOver bool
	// unstore are sockets in systemd's fd store the config no longer has,
	// dropped once this supervisor is in charge.
	unstore []string
	// passSeq numbers the sockets registered with the upgrader.
	passSeq int
	// stopping: a stop was asked for (it waits while a self-upgrade is
	// under way); stopSignalled: by a signal, so the next one kills.
	stopping, stopSignalled bool
	// orphans are the children that are no worker, signalled since baton
	// began to stop (sweepOrphans); baton exits once they are reaped.
	// stopKilled: the stop deadline passed (or a second signal came), so
	// they get SIGKILL.
	orphans    map[int]bool
	stopKilled bool
	// successor is the pid of the baton that took over, once known.
	successor int
}

// Run starts the worker pool described by cfg and keeps it serving until
// ctx is cancelled or a stop signal arrives, then drains every worker and
// returns. It returns an error when the service could not start (the
// listeners, or workers that did not become ready within reload.timeout).
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	s, err := newSupervisor(cfg, opts)
	if err != nil {
		return err
	}
	defer s.close()
	return s.run(ctx, opts.Signals)
}

func newSupervisor(cfg *config.Config, opts Options) (_ *supervisor, err error) {
	s := &supervisor{
		cfg:       cfg,
		load:      opts.Load,
		log:       opts.Logger,
		toSystemd: opts.Notify,
		shim:      opts.Shim,
		out:       &lineWriter{w: opts.Output},
		events:    make(chan event, 64),
		quit:      make(chan struct{}),
		workers:   map[int]*worker{},
		orphans:   map[int]bool{},
		readers:   map[*os.File]bool{},
		devNull:   -1,
		upg:       opts.Upgrader,
		version:   opts.Version,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.load == nil {
		s.load = func() (*config.Config, error) { return cfg, nil }
	}
	if s.toSystemd == nil {
		s.toSystemd = systemd.Notify
	}
	if s.out.w == nil {
		buf := logbuf.New(os.Stderr, logbuf.Options{})
		s.out.w, s.closeOut = buf.Bulk(), func() { buf.Close(time.Second) }
	}
	// A self-upgrade runs the file at os.Args[0], as tableflip does.
	if p, err := exec.LookPath(os.Args[0]); err == nil {
		s.exePath = p
	}
	s.exe, _ = os.Stat(selfExe)
	if s.shim == nil {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("supervisor: find own executable for the worker shim: %w", err)
		}
		// The shim is this very executable, even once a package upgrade
		// replaced the file (a new binary that is broken must not keep the
		// running baton from starting workers).
		if _, err := os.Stat(selfExe); err == nil {
			exe = selfExe
		}
		s.shim = []string{exe, spawn.ShimCommand, "--"}
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	// As child subreaper, orphans of the workers are re-parented to baton
	// rather than to PID 1, and reaped here.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("supervisor: become child subreaper: %w", os.NewSyscallError("prctl", err))
	}

	var note *upgradeNote
	if s.upg != nil && s.upg.HasParent() {
		if note, err = s.takeFromParent(cfg); err != nil {
			return nil, err
		}
	} else {
		inherited := opts.Inherited
		if inherited == nil {
			if inherited, err = systemd.Inherited(); err != nil {
				return nil, err
			}
		}
		if s.listeners, err = adoptInherited(cfg.Listen, inherited, s.log); err != nil {
			return nil, err
		}
	}

	if note != nil && note.RuntimeDir != "" {
		// The service's runtime directory outlives each baton process:
		// the successor answers on the same control socket.
		s.dir = runtimeDir{path: note.RuntimeDir, created: note.OwnsRuntimeDir}
	} else if s.dir, err = openRuntimeDir(opts.RuntimeDir, s.log); err != nil {
		return nil, err
	}
	path := filepath.Join(s.dir.path, "notify-"+strconv.Itoa(os.Getpid())+".sock")
	if s.fromWorkers, err = systemd.ListenNotify(path); err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	ctlPath := cfg.Control.Socket
	if ctlPath == "" {
		ctlPath = filepath.Join(s.dir.path, ControlSocketName)
	}
	if s.control, err = s.openControl(ctlPath, note); err != nil {
		return nil, err
	}
	if err := s.passListeners(true); err != nil {
		return nil, err
	}
	if s.devNull, err = unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("supervisor: open %s: %w", os.DevNull, os.NewSyscallError("open", err))
	}
	s.spawner = spawn.NewSpawner()
	return s, nil
}

// close releases what newSupervisor acquired. Every worker has exited by
// then, or was never started.
func (s *supervisor) close() {
	if s.spawner != nil {
		s.spawner.Close()
	}
	if s.control != nil {
		s.control.close(s.sharesSockets())
	}
	if s.fromWorkers != nil {
		s.fromWorkers.Close()
	}
	if s.devNull >= 0 {
		unix.Close(s.devNull)
	}
	closeListeners(s.listeners, s.sharesSockets())
	if !s.sharesSockets() {
		s.dir.remove()
	}
	if s.closeOut != nil {
		s.closeOut()
	}
}

func (s *supervisor) run(ctx context.Context, signals <-chan os.Signal) error {
	sigchld := notifySIGCHLD()
	defer signal.Stop(sigchld)
	s.goTask(func() { reap(sigchld, s.events, s.quit, s.syncNotify) })
	s.goTask(s.readNotify)
	if !s.takingOver {
		s.serveControl()
	}
	defer func() {
		close(s.quit)
		s.fromWorkers.Close() // unblocks readNotify
		s.control.close(s.sharesSockets())
		s.tasks.Wait()
		s.waitOutputs()
	}()

	s.log.Info("starting workers", "count", s.cfg.Worker.Count, "command", strings.Join(s.cfg.Worker.Command, " "),
		"listeners", listenerNames(s.cfg), "control", s.control.path, "version", s.version)
	g, err := s.newGeneration(s.cfg)
	if err == nil {
		s.next = g
		err = s.startGeneration(g)
	}
	if err != nil {
		s.fail(err)
	}
	s.after(MemoryCheckInterval, timerEvent{kind: memoryCheck})
	if !s.takingOver {
		s.armOwnWatchdog()
	}

	done := ctx.Done()
	// After a handover the loop also waits for the successor's answer to
	// the upgrade's requester (bounded by handoverDeadline).
	for s.phase != phaseStopping || len(s.workers) > 0 || len(s.orphans) > 0 || s.reload != nil && s.handedOver {
		select {
		case <-done:
			done = nil
			s.log.Info("stopping: context cancelled")
			s.beginStop()
		case sig, ok := <-signals:
			if !ok {
				signals = nil
				break
			}
			s.onSignal(sig)
		case ev := <-s.events:
			s.handle(ev)
		}
	}
	s.answerPending(errors.New("supervisor: baton is stopping"))
	if s.takingOver && s.err == nil {
		s.err = errors.New("supervisor: stopped before taking over from the previous baton")
	}
	switch {
	case s.handedOver:
		s.log.Info("handed over: exiting")
	case s.err == nil:
		s.log.Info("stopped")
	}
	return s.err
}

// serveControl starts answering on the control socket. A supervisor
// taking over starts only once it is in charge: until then its parent
// answers.
func (s *supervisor) serveControl() {
	s.goTask(func() { s.control.serve(s.post, s.quit) })
}

// armOwnWatchdog starts pinging systemd's watchdog when WatchdogSec= is
// set. The pings come from the loop itself, so a loop that hangs stops
// them and systemd restarts baton. A supervisor started by a self-upgrade
// inherited WATCHDOG_PID naming its parent; once in charge it takes the
// watchdog over, and names itself for its own successor.
func (s *supervisor) armOwnWatchdog() {
	d, err := systemd.WatchdogFor(s.parent)
	if err != nil {
		s.log.Warn("ignoring systemd's watchdog setting", "err", err)
		return
	}
	if d <= 0 {
		return
	}
	os.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	s.wdPing = d / 2
	s.log.Info("pinging systemd's watchdog", "every", s.wdPing)
	s.sendSystemd("WATCHDOG=1")
	s.after(s.wdPing, timerEvent{kind: ownWatchdog})
}

func (s *supervisor) goTask(f func()) {
	s.tasks.Add(1)
	go func() {
		defer s.tasks.Done()
		f()
	}()
}

// post hands an event to the loop, or drops it once the loop has ended.
func (s *supervisor) post(ev event) {
	select {
	case s.events <- ev:
	case <-s.quit:
	}
}

// after posts ev once d has passed; the timer is returned so it can be
// stopped.
func (s *supervisor) after(d time.Duration, ev event) *time.Timer {
	return time.AfterFunc(d, func() { s.post(ev) })
}

// syncNotify lets the notify reader pass on every datagram already
// queued, so that a worker's last message (STOPPING=1 as it leaves) comes
// before its exit. Bounded: ordering is not worth holding up reaping.
func (s *supervisor) syncNotify() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.fromWorkers.Sync(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Debug("notify socket not synced before reporting exits", "err", err)
	}
}

func (s *supervisor) readNotify() {
	for {
		m, err := s.fromWorkers.Receive()
		if err != nil {
			return // closed
		}
		s.post(notifyEvent{m})
	}
}

func (s *supervisor) handle(ev event) {
	switch ev := ev.(type) {
	case exitEvent:
		s.onExit(ev)
	case notifyEvent:
		s.onNotify(ev.msg)
	case timerEvent:
		s.onTimer(ev)
	case controlEvent:
		s.onControl(ev)
	case upgradeDone:
		s.onUpgradeDone(ev)
	case successorInfo:
		s.onSuccessorInfo(ev)
	}
}

func (s *supervisor) onSignal(sig os.Signal) {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		if s.stopSignalled {
			s.log.Warn("second stop signal: killing workers", "signal", sig.String())
			if s.upgrading() {
				s.upg.Stop() // kills the successor
			}
			s.stopKilled = true
			s.killAll()
			return
		}
		s.stopSignalled = true
		s.log.Info("stopping", "signal", sig.String())
		s.beginStop()
	case syscall.SIGHUP:
		s.requestReload(nil, false)
	case syscall.SIGUSR2:
		s.requestReload(nil, true)
	default:
		s.log.Debug("signal ignored", "signal", sig.String())
	}
}

// generations returns every generation that still has workers or is
// about to: the serving one, the starting one and the draining ones.
func (s *supervisor) generations() []*generation {
	gs := append([]*generation(nil), s.draining...)
	if s.current != nil {
		gs = append(gs, s.current)
	}
	if s.next != nil {
		gs = append(gs, s.next)
	}
	return gs
}

// waitOutputs lets the forwarders print what the workers wrote last, then
// closes the pipes of any held open by a process that escaped its group.
func (s *supervisor) waitOutputs() {
	done := make(chan struct{})
	go func() {
		s.outputs.Wait()
		close(done)
	}()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	s.readersMu.Lock()
	for r := range s.readers {
		r.Close()
	}
	s.readersMu.Unlock()
	<-done
}

func (s *supervisor) onTimer(ev timerEvent) {
	switch ev.kind {
	case readyDelayDone:
		if s.workers[ev.w.pid] == ev.w && ev.w.state == starting {
			s.markReady(ev.w)
		}
	case readyDeadline:
		if ev.g != s.next {
			return
		}
		why := fmt.Errorf("%s did not become ready within %s", ev.g, ev.g.cfg.Reload.Timeout.Std())
		if w := ev.g.firstNotReady(); w != nil {
			why = fmt.Errorf("%s did not become ready within %s (ready = %q)", w, ev.g.cfg.Reload.Timeout.Std(), ev.g.cfg.Worker.Ready)
		} else {
			for slot, last := range ev.g.lastExit {
				if ev.g.slots[slot] == nil && last != "" {
					why = fmt.Errorf("worker %d was not ready within %s: %s", slot, ev.g.cfg.Reload.Timeout.Std(), last)
					break
				}
			}
		}
		s.abandonNext(why)
	case respawnSlot:
		g := ev.g
		if s.phase == phaseStopping || g.state == genDraining || g.slots[ev.slot] != nil {
			return
		}
		s.refill(g, ev.slot, nil, 0)
		s.publishStatus()
	case drainDeadline:
		if s.workers[ev.w.pid] == ev.w {
			s.log.Warn("worker did not finish draining in time, killing it", "slot", ev.w.slot, "pid", ev.w.pid, "drain_timeout", ev.w.gen.cfg.Worker.DrainTimeout.Std())
			ev.w.signalGroup(sigkill)
		}
	case watchdogExpired:
		if w := ev.w; s.workers[w.pid] == w && ev.seq == w.wdSeq {
			s.replaceFirst(w, fmt.Sprintf("sent no WATCHDOG=1 for %s", w.gen.cfg.Worker.Watchdog.Std()), sigkill)
		}
	case memoryCheck:
		s.checkMemory()
	case ownWatchdog:
		if s.handedOver {
			return // the successor pings now
		}
		s.sendSystemd("WATCHDOG=1")
		s.after(s.wdPing, ev)
	case handoverDeadline:
		if s.handedOver && s.reload != nil {
			s.onSuccessorInfo(successorInfo{err: errors.New("the new baton did not answer")})
		}
	case upgradeDeadline, upgradeKill:
		s.onUpgradeDeadline(ev.kind == upgradeKill)
	case stopDeadline:
		s.stopKilled = true
		if len(s.workers) > 0 {
			s.log.Warn("drain timed out, killing workers", "left", len(s.workers))
		}
		s.killAll()
	}
}

// abandonNext gives up on the starting generation: at start baton fails;
// on a reload the new workers are stopped and the serving generation,
// which never stopped serving, stays.
func (s *supervisor) abandonNext(why error) {
	g := s.next
	s.next = nil
	if s.current == nil {
		s.drainGeneration(g, "start failed")
		s.fail(fmt.Errorf("%w: %w", ErrNotReady, why))
		return
	}
	s.drainGeneration(g, "reload rolled back")
	s.finishReload(fmt.Errorf("supervisor: reload rolled back: %w", why))
}

// fail records why the service cannot run and stops it.
func (s *supervisor) fail(err error) {
	if s.err == nil {
		s.err = err
		s.log.Error("giving up", "err", err)
	}
	s.beginStop()
}

// beginStop tells systemd and every worker that the service is stopping.
// The loop ends once every worker has exited; the drain deadline of each
// worker's generation then kills the rest.
func (s *supervisor) beginStop() {
	if s.phase == phaseStopping {
		return
	}
	if s.upgrading() {
		// The successor shares every socket and may be about to take
		// over: ask it to give up (it drains what it started), and stop
		// once the upgrade has ended, one way or the other.
		if s.stopping {
			return // asked already
		}
		s.stopping = true
		if s.reload.signalled || s.signalSuccessor(unix.SIGTERM) {
			s.log.Info("stopping: the self-upgrade under way is cancelled")
		} else {
			s.log.Info("stopping once the self-upgrade under way has ended")
		}
		return
	}
	s.stopping = true
	if s.upg != nil {
		s.upg.Stop() // no self-upgrade from now on
	}
	s.sendSystemd("STOPPING=1")
	s.phase = phaseStopping // no queued reload starts now
	s.finishReload(errors.New("supervisor: baton is stopping"))
	s.drainAll("stopping", errors.New("supervisor: baton is stopping"))
}

// drainAll drains every generation and closes baton's copies of the
// sockets: no worker will start again.
func (s *supervisor) drainAll(why string, pendingErr error) {
	s.phase = phaseStopping
	var longest time.Duration
	for _, g := range s.generations() {
		longest = max(longest, g.cfg.Worker.DrainTimeout.Std())
		if g.state != genDraining {
			s.drainGeneration(g, why)
		}
	}
	s.current, s.next = nil, nil
	s.answerPending(pendingErr)
	// Closing the sockets now lets each one close as soon as the draining
	// workers have closed theirs: a new client is refused at once instead
	// of waiting in a queue nobody accepts from until baton exits. A
	// socket from systemd stays open in systemd, its queue kept for the
	// next start; after a handover the successor holds them all.
	closeListeners(s.listeners, s.sharesSockets())
	s.listeners = nil
	s.sweepOrphans()
	s.after(longest, timerEvent{kind: stopDeadline})
	if len(s.workers) > 0 {
		// A drain longer than TimeoutStopSec= must not be cut by systemd.
		s.sendSystemd(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", (longest + 5*time.Second).Microseconds()))
	}
}

// sharesSockets reports whether another supervisor uses this one's
// sockets: this one's successor (starting, or in charge), or the one this
// one is taking over from. Sockets
// are then closed without unlinking their paths or leaving the fd store.
func (s *supervisor) sharesSockets() bool { return s.takingOver || s.handedOver || s.upgrading() }

// killAll kills every worker and, once baton is stopping, every orphan.
func (s *supervisor) killAll() {
	for _, w := range s.workers {
		w.signalGroup(sigkill)
	}
	s.sweepOrphans()
}

// sendSystemd notifies systemd, unless another supervisor speaks for the
// service: the one being taken over, or the successor.
func (s *supervisor) sendSystemd(state string) {
	if s.sharesSockets() {
		return
	}
	if err := s.toSystemd(state); err != nil {
		s.log.Warn("cannot notify systemd", "err", err)
	}
}

func (s *supervisor) statusLine() string {
	g := s.serving()
	if g == nil {
		return "stopping"
	}
	line := fmt.Sprintf("%d/%d workers ready, generation %d, %d restarts in %s", g.readyCount(), len(g.slots), g.n,
		s.recentRestarts(), s.cfg.Restart.Window.Std())
	if s.gaveUp {
		line += ", gave up restarting (budget spent)"
	}
	if s.reload != nil && s.next != nil {
		line += fmt.Sprintf(", reloading to generation %d", s.next.n)
	}
	return line + s.last.String()
}

// publishStatus sends STATUS= to systemd when it changed.
func (s *supervisor) publishStatus() {
	if s.phase == phaseStopping || s.takingOver {
		return
	}
	if line := s.statusLine(); line != s.status {
		s.status = line
		s.sendSystemd("STATUS=" + line)
	}
}

// recentRestarts counts the unplanned restarts within restart.window.
func (s *supervisor) recentRestarts() int {
	n := 0
	for _, t := range s.restartTimes {
		if time.Since(t) < s.cfg.Restart.Window.Std() {
			n++
		}
	}
	return n
}

func listenerNames(cfg *config.Config) string {
	names := make([]string, len(cfg.Listen))
	for i, l := range cfg.Listen {
		names[i] = l.Name
	}
	return strings.Join(names, ",")
}
