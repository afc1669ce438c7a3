package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/config"
	"github.com/batonhq/baton/handoff"
	"github.com/batonhq/baton/systemd"
)

// RespawnDelay is how long a slot stays empty after its worker exited
// unexpectedly, so that a worker that dies at once cannot make baton spin.
const RespawnDelay = 100 * time.Millisecond

// ErrNotReady is wrapped by the error Run returns when the first generation
// of workers did not become ready.
var ErrNotReady = errors.New("supervisor: workers did not become ready")

// Options are the parts of a run that are not configuration. The zero
// value is usable.
type Options struct {
	// Logger receives baton's own log; nil means slog.Default().
	Logger *slog.Logger
	// Signals delivers SIGTERM and SIGINT (stop: drain, then exit; a second
	// one kills the workers at once). Run does not subscribe to signals
	// itself, so tests and embedders choose.
	Signals <-chan os.Signal
	// Shim is the argv prefix that runs handoff.ExecWorker; nil means this
	// executable with "exec-worker --".
	Shim []string
	// Output receives the workers' output lines; nil means os.Stderr.
	Output io.Writer
	// Notify sends a message to systemd; nil means systemd.Notify.
	Notify func(state string) error
	// RuntimeDir holds the notify socket; empty means $RUNTIME_DIRECTORY,
	// else a new temporary directory that is removed at the end.
	RuntimeDir string
	// Inherited are the sockets passed by systemd; nil means
	// systemd.Inherited() is called.
	Inherited []systemd.Socket
}

// event is anything the loop reacts to.
type event any

type timerKind int

const (
	readyDelayDone timerKind = iota // a delay-ready worker stayed up long enough
	startDeadline                   // the first generation's time to become ready ran out
	respawnSlot                     // time to refill an empty slot
	drainDeadline                   // a draining worker's time is up
	stopDeadline                    // the drain on stop ran out of time
)

type timerEvent struct {
	kind timerKind
	w    *worker // for readyDelayDone, drainDeadline
	slot int     // for respawnSlot
}

type notifyEvent struct{ msg systemd.Message }

type phase int

const (
	phaseStarting phase = iota
	phaseRunning
	phaseStopping
)

type supervisor struct {
	cfg     *config.Config
	log     *slog.Logger
	notifyS func(string) error
	shim    []string
	out     *lineWriter

	listeners []listener
	notify    *systemd.NotifyServer
	spawner   *handoff.Spawner
	devNull   int
	tmpDir    string

	events  chan event
	quit    chan struct{} // closed when the loop ends: timers and readers stop sending
	tasks   sync.WaitGroup
	outputs sync.WaitGroup
	// readers are the output pipes whose forwarders are still running.
	readersMu sync.Mutex
	readers   map[*os.File]bool

	phase    phase
	err      error
	gen      int
	workers  map[int]*worker // every live worker process, by pid
	slots    []*worker       // the serving (or starting) worker of each slot
	restarts int
	dropped  int // notify messages from unknown senders
	status   string
}

// Run starts the worker pool described by cfg and keeps it serving until
// ctx is cancelled or a stop signal arrives, then drains every worker and
// returns. It returns an error when the service could not start (the
// listeners, or workers that did not become ready within reload.timeout).
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	s, err := newSupervisor(ctx, cfg, opts)
	if err != nil {
		return err
	}
	defer s.close()
	return s.run(ctx, opts.Signals)
}

func newSupervisor(ctx context.Context, cfg *config.Config, opts Options) (_ *supervisor, err error) {
	s := &supervisor{
		cfg:     cfg,
		log:     opts.Logger,
		notifyS: opts.Notify,
		shim:    opts.Shim,
		out:     &lineWriter{w: opts.Output},
		events:  make(chan event, 64),
		quit:    make(chan struct{}),
		workers: map[int]*worker{},
		readers: map[*os.File]bool{},
		slots:   make([]*worker, cfg.Worker.Count),
		devNull: -1,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.notifyS == nil {
		s.notifyS = systemd.Notify
	}
	if s.out.w == nil {
		s.out.w = os.Stderr
	}
	if s.shim == nil {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("supervisor: find own executable for the worker shim: %w", err)
		}
		s.shim = []string{exe, handoff.ShimCommand, "--"}
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

	inherited := opts.Inherited
	if inherited == nil {
		if inherited, err = systemd.Inherited(); err != nil {
			return nil, err
		}
	}
	if s.listeners, err = openListeners(ctx, cfg.Listen, inherited); err != nil {
		return nil, err
	}

	dir := opts.RuntimeDir
	if dir == "" {
		dir = os.Getenv("RUNTIME_DIRECTORY")
		// systemd may list several directories separated by ':'.
		dir, _, _ = strings.Cut(dir, ":")
	}
	if dir == "" {
		if s.tmpDir, err = os.MkdirTemp("", "baton-"); err != nil {
			return nil, fmt.Errorf("supervisor: runtime directory: %w", err)
		}
		dir = s.tmpDir
	}
	path := filepath.Join(dir, "notify-"+strconv.Itoa(os.Getpid())+".sock")
	if s.notify, err = systemd.ListenNotify(path); err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	if s.devNull, err = unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("supervisor: open %s: %w", os.DevNull, os.NewSyscallError("open", err))
	}
	s.spawner = handoff.NewSpawner()
	return s, nil
}

// close releases what newSupervisor acquired. Every worker has exited by
// then, or was never started.
func (s *supervisor) close() {
	if s.spawner != nil {
		s.spawner.Close()
	}
	if s.notify != nil {
		s.notify.Close()
	}
	if s.devNull >= 0 {
		unix.Close(s.devNull)
	}
	closeListeners(s.listeners)
	if s.tmpDir != "" {
		os.RemoveAll(s.tmpDir)
	}
}

func (s *supervisor) run(ctx context.Context, signals <-chan os.Signal) error {
	sigchld := notifySIGCHLD()
	defer signal.Stop(sigchld)
	s.goTask(func() { reap(sigchld, s.events, s.quit) })
	s.goTask(s.readNotify)
	defer func() {
		close(s.quit)
		s.notify.Close() // unblocks readNotify
		s.tasks.Wait()
		s.waitOutputs()
	}()

	s.gen = 1
	s.log.Info("starting workers", "count", len(s.slots), "command", strings.Join(s.cfg.Worker.Command, " "), "listeners", s.listenerNames())
	for slot := range s.slots {
		if err := s.startWorker(slot); err != nil {
			s.fail(err)
			break
		}
	}
	s.after(s.cfg.Reload.Timeout.Std(), timerEvent{kind: startDeadline})

	done := ctx.Done()
	for s.phase != phaseStopping || len(s.workers) > 0 {
		select {
		case <-done:
			done = nil
			s.log.Info("stopping: context cancelled")
			s.beginStop()
		case sig := <-signals:
			s.onSignal(sig)
		case ev := <-s.events:
			s.handle(ev)
		}
	}
	if s.err == nil {
		s.log.Info("stopped")
	}
	return s.err
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

func (s *supervisor) readNotify() {
	for {
		m, err := s.notify.Receive()
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
	}
}

func (s *supervisor) onSignal(sig os.Signal) {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		if s.phase == phaseStopping {
			s.log.Warn("second stop signal: killing workers", "signal", sig.String())
			s.killAll()
			return
		}
		s.log.Info("stopping", "signal", sig.String())
		s.beginStop()
	default:
		s.log.Debug("signal ignored", "signal", sig.String())
	}
}

// startWorker starts a worker in slot, for the current generation.
func (s *supervisor) startWorker(slot int) error {
	r, wfd, err := outputPipe()
	if err != nil {
		return fmt.Errorf("supervisor: start worker %d: %w", slot, err)
	}
	pid, err := s.spawner.Start(s.spec(slot, s.gen, wfd))
	unix.Close(wfd)
	if err != nil {
		r.Close()
		return fmt.Errorf("supervisor: start worker %d: %w", slot, err)
	}
	w := &worker{slot: slot, gen: s.gen, pid: pid, started: time.Now()}
	s.workers[pid] = w
	s.slots[slot] = w
	s.outputs.Add(1)
	s.readersMu.Lock()
	s.readers[r] = true
	s.readersMu.Unlock()
	go func() {
		defer s.outputs.Done()
		forward(r, fmt.Sprintf("[worker %d pid %d] ", slot, pid), s.out)
		s.readersMu.Lock()
		delete(s.readers, r)
		s.readersMu.Unlock()
	}()
	if d := s.cfg.Worker.ReadyDelay; d > 0 {
		w.timers = append(w.timers, s.after(d, timerEvent{kind: readyDelayDone, w: w}))
	}
	s.log.Info("worker started", "slot", slot, "pid", pid, "generation", s.gen)
	return nil
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

func (s *supervisor) onExit(ev exitEvent) {
	w := s.workers[ev.pid]
	if w == nil {
		s.log.Debug("reaped orphan", "pid", ev.pid, "how", describeExit(ev.status))
		return
	}
	delete(s.workers, ev.pid)
	w.stopTimers()
	// Anything the worker left in its group is an orphan now.
	w.signalGroup(unix.SIGKILL)
	how := describeExit(ev.status)
	if s.slots[w.slot] != w {
		s.log.Info("worker exited", "slot", w.slot, "pid", w.pid, "how", how, "state", w.state.String())
		s.publishStatus()
		return
	}
	s.slots[w.slot] = nil
	switch s.phase {
	case phaseStarting:
		if w.state != ready {
			s.fail(fmt.Errorf("%w: %s exited before it was ready: %s", ErrNotReady, w, how))
			return
		}
		fallthrough
	case phaseRunning:
		s.restarts++
		s.log.Warn("worker exited unexpectedly, replacing it", "slot", w.slot, "pid", w.pid, "how", how, "after", RespawnDelay)
		s.after(RespawnDelay, timerEvent{kind: respawnSlot, slot: w.slot})
	case phaseStopping:
		s.log.Info("worker exited", "slot", w.slot, "pid", w.pid, "how", how)
	}
	s.publishStatus()
}

func (s *supervisor) onTimer(ev timerEvent) {
	switch ev.kind {
	case readyDelayDone:
		if s.workers[ev.w.pid] == ev.w && ev.w.state == starting {
			s.markReady(ev.w)
		}
	case startDeadline:
		if s.phase != phaseStarting {
			return
		}
		for _, w := range s.slots {
			if w != nil && w.state != ready {
				s.fail(fmt.Errorf("%w: %s did not become ready within %s (ready = %q)", ErrNotReady, w, s.cfg.Reload.Timeout.Std(), s.cfg.Worker.Ready))
				return
			}
		}
		s.fail(fmt.Errorf("%w within %s", ErrNotReady, s.cfg.Reload.Timeout.Std()))
	case respawnSlot:
		if s.phase == phaseStopping || s.slots[ev.slot] != nil {
			return
		}
		if err := s.startWorker(ev.slot); err != nil {
			s.log.Error("cannot start worker, retrying", "slot", ev.slot, "err", err, "after", RespawnDelay)
			s.after(RespawnDelay, ev)
		}
		s.publishStatus()
	case drainDeadline:
		if s.workers[ev.w.pid] == ev.w {
			s.log.Warn("worker did not finish draining in time, killing it", "slot", ev.w.slot, "pid", ev.w.pid, "drain_timeout", s.cfg.Worker.DrainTimeout.Std())
			ev.w.signalGroup(unix.SIGKILL)
		}
	case stopDeadline:
		if len(s.workers) > 0 {
			s.log.Warn("drain timed out, killing workers", "left", len(s.workers), "drain_timeout", s.cfg.Worker.DrainTimeout.Std())
			s.killAll()
		}
	}
}

func (s *supervisor) markReady(w *worker) {
	w.state = ready
	s.log.Info("worker ready", "slot", w.slot, "pid", w.pid, "after", time.Since(w.started).Round(time.Millisecond))
	if s.phase == phaseStarting {
		for _, o := range s.slots {
			if o == nil || o.state != ready {
				s.publishStatus()
				return
			}
		}
		s.phase = phaseRunning
		s.log.Info("all workers ready", "count", len(s.slots), "generation", s.gen)
		s.sendSystemd("READY=1\nSTATUS=" + s.statusLine())
		s.status = s.statusLine()
		return
	}
	s.publishStatus()
}

// retire takes a worker that announced it is leaving (STOPPING=1) out of
// its slot and starts its replacement at once, before it has finished
// draining: the socket never lacks a ready worker for longer than the
// replacement takes to start.
func (s *supervisor) retire(w *worker) {
	if w.state == draining {
		return
	}
	w.state = draining
	w.timers = append(w.timers, s.after(s.cfg.Worker.DrainTimeout.Std(), timerEvent{kind: drainDeadline, w: w}))
	if s.slots[w.slot] != w || s.phase == phaseStopping {
		return
	}
	s.slots[w.slot] = nil
	s.restarts++
	s.log.Info("worker is leaving, starting its replacement", "slot", w.slot, "pid", w.pid)
	if err := s.startWorker(w.slot); err != nil {
		s.log.Error("cannot start replacement, retrying", "slot", w.slot, "err", err, "after", RespawnDelay)
		s.after(RespawnDelay, timerEvent{kind: respawnSlot, slot: w.slot})
	}
	s.publishStatus()
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
// The loop ends once every worker has exited; at drain_timeout the rest
// are killed.
func (s *supervisor) beginStop() {
	if s.phase == phaseStopping {
		return
	}
	s.phase = phaseStopping
	s.sendSystemd("STOPPING=1")
	for _, w := range s.workers {
		w.state = draining
		w.signalGroup(unix.SIGTERM)
	}
	// No worker will start again, so baton's copies of the sockets are of
	// no more use. Closing them now lets each socket close as soon as the
	// draining workers have closed theirs: a new client is refused at once
	// instead of waiting in a queue nobody accepts from until baton exits.
	// A socket from systemd stays open in systemd, its queue kept for the
	// next start.
	closeListeners(s.listeners)
	s.listeners = nil
	s.after(s.cfg.Worker.DrainTimeout.Std(), timerEvent{kind: stopDeadline})
}

func (s *supervisor) killAll() {
	for _, w := range s.workers {
		w.signalGroup(unix.SIGKILL)
	}
}

func (s *supervisor) sendSystemd(state string) {
	if err := s.notifyS(state); err != nil {
		s.log.Warn("cannot notify systemd", "err", err)
	}
}

func (s *supervisor) statusLine() string {
	readyN := 0
	for _, w := range s.slots {
		if w != nil && w.state == ready {
			readyN++
		}
	}
	return fmt.Sprintf("%d/%d workers ready, generation %d, %d restarts", readyN, len(s.slots), s.gen, s.restarts)
}

// publishStatus sends STATUS= to systemd when it changed.
func (s *supervisor) publishStatus() {
	if s.phase == phaseStopping {
		return
	}
	if line := s.statusLine(); line != s.status {
		s.status = line
		s.sendSystemd("STATUS=" + line)
	}
}

func (s *supervisor) listenerNames() string {
	names := make([]string, len(s.listeners))
	for i, l := range s.listeners {
		names[i] = l.name
	}
	return strings.Join(names, ",")
}
