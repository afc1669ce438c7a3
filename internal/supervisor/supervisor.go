package supervisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/internal/lifecycle"
	"github.com/batonhq/baton/internal/linering"
	"github.com/batonhq/baton/internal/logbuf"
	"github.com/batonhq/baton/internal/memtrim"
	"github.com/batonhq/baton/internal/roundrobin"
	"github.com/batonhq/baton/internal/spawn"
	"github.com/batonhq/baton/internal/steer"
	"github.com/batonhq/baton/internal/systemd"
	"github.com/batonhq/baton/internal/upgrade"
)

// selfExe is the running executable, even once its file was replaced.
const selfExe = "/proc/self/exe"

// Errors Run returns, wrapped.
var (
	// ErrNotReady: the first generation of workers did not become ready.
	ErrNotReady = lifecycle.ErrNotReady
	// ErrGiveUp: the restart budget was spent and restart.on_giveup is
	// "exit".
	ErrGiveUp = lifecycle.ErrGiveUp
)

// Options are the parts of a run that are not configuration. The zero
// value is usable.
type Options struct {
	// Logger receives baton's own log; nil means slog.Default().
	Logger *slog.Logger
	// Signals delivers SIGTERM and SIGINT (stop: after stop.delay, drain,
	// then exit; one during the delay skips the rest of it, a second one
	// during the drain kills the workers at once) and SIGHUP (reload).
	// Run does not subscribe to signals itself, so tests and embedders
	// choose.
	Signals <-chan os.Signal
	// Load re-reads the configuration for a reload, in a goroutine of its
	// own (never on the event loop); nil means reloads reuse the
	// configuration Run was given.
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
	// OutputJSON writes each of the workers' lines to Output as one JSON
	// object (with --log-format json) instead of prefixed with its slot
	// and pid.
	OutputJSON bool
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
	// ConfigFile is the configuration's file, as status names it; "" for
	// flags alone.
	ConfigFile string
	// Journal sends the workers' lines to journald natively, with
	// BATON_WORKER, BATON_GENERATION, WORKER_PID and SYSLOG_* fields, instead of to
	// Output (set it when baton's stderr is the journal).
	Journal bool
}

// supervisor is the imperative shell around the lifecycle.Machine: it
// holds the sockets, processes and goroutines, runs the loop that feeds
// the Machine its events, and carries out the Machine's actions. Its
// parts match lifecycle.Env's, each in the file named for it.
type supervisor struct {
	m   *lifecycle.Machine
	log *slog.Logger

	processes      // lifecycle.Processes: processes.go
	sockets        // lifecycle.Sockets: sockets.go
	serviceManager // lifecycle.Systemd: systemd.go
	upgrades       // lifecycle.Upgrades: upgrade.go

	// The loop (below): its events, the tasks it waits for at the end.
	events chan any
	quit   chan struct{} // closed when the loop ends: timers and readers stop sending
	tasks  sync.WaitGroup
	// ready is the Machine's Ready as of the last event, for /readyz.
	ready atomic.Bool
	// trimmed is when trimMemory last ran (Unix nanoseconds), for stats.
	trimmed atomic.Int64

	// What an operator reaches: the control socket (control.go), the
	// metrics listener (metrics.go), and the runtime directory
	// (rundir.go) that holds the notify and (by default) control sockets.
	control *controlServer
	metrics *metricsServer // nil without control.metrics
	dir     runtimeDir
	version string
	started time.Time // when this baton process started
	// configFile and unit say which baton this is, for status: its
	// configuration's file, and the systemd service it runs in.
	configFile, unit string

	// groups are the SO_REUSEPORT groups (reuseport; internal/steer
	// decides, balance.go carries out): pendingKill the signals waiting
	// for their workers' sockets' queues, by pid; recheck, while another
	// process's sockets are in a group, checks the groups again;
	// unservedBlind: sock_diag was refused, and that was said; drains
	// are the workers that said they serve what they accepted.
	groups        *steer.Groups
	pendingKill   map[int]*pendingSignal
	recheck       *time.Timer
	unservedBlind bool
	drains        map[int]bool
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
	return s.run(ctx, cfg, opts.Signals)
}

func newSupervisor(cfg *config.Config, opts Options) (_ *supervisor, err error) {
	s := &supervisor{
		log:         opts.Logger,
		events:      make(chan any, 64),
		quit:        make(chan struct{}),
		pendingKill: map[int]*pendingSignal{},
		drains:      map[int]bool{},
		version:     opts.Version,
		configFile:  opts.ConfigFile,
		unit:        systemd.Unit(),
		started:     time.Now(),
		processes: processes{
			shim:    opts.Shim,
			out:     &lineWriter{w: opts.Output, json: opts.OutputJSON},
			ring:    linering.New(linering.Options{}),
			readers: map[*os.File]bool{},
			devNull: -1,
			reaper:  newReaper(),
		},
		serviceManager: serviceManager{load: opts.Load, toSystemd: opts.Notify},
		upgrades:       upgrades{upg: opts.Upgrader},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.groups = steer.New(steerEnv{steer.Kernel{MigrateReq: migrateReqPath}, s}, s.log)
	if s.load == nil {
		s.load = func() (*config.Config, error) { return cfg, nil }
	}
	if s.toSystemd == nil {
		s.toSystemd = systemd.Notify
	}
	if opts.Journal {
		s.journal = newJournalSink()
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
		s.chooseBalance(cfg, nil)
	}
	if s.balance == config.BalanceRoundRobin {
		s.rr = roundrobin.New(s.log, func(st roundrobin.Stuck) { s.post(lifecycle.Stuck{PID: st.PID, Unread: st.Unread}) })
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
		ctlPath = filepath.Join(s.dir.path, control.SocketName)
	}
	if s.control, err = s.openControl(ctlPath, note); err != nil {
		return nil, err
	}
	s.control.Server = control.Server{
		Post:   func(ev lifecycle.Event) { s.post(ev) },
		OnLoop: func(f func()) { s.post(loopCall{do: f}) },
		State:  s,
		Ring:   s.ring,
	}
	if addr := cfg.Control.Metrics; addr != "" {
		if s.metrics, err = s.openMetrics(addr, note); err != nil {
			return nil, err
		}
	}
	if err := s.passListeners(true); err != nil {
		return nil, err
	}
	if s.devNull, err = unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("supervisor: open %s: %w", os.DevNull, os.NewSyscallError("open", err))
	}
	s.spawner = spawn.NewSpawner()
	mopts := lifecycle.Options{Logger: s.log, PID: os.Getpid(), Parent: s.parent}
	if note != nil {
		mopts.LastGen, mopts.Scaled = note.Generation, lifecycle.Scaled{Workers: note.Scaled, Config: note.ScaledFrom}
	}
	s.m = lifecycle.New(s, mopts)
	return s, nil
}

// sharing reports whether another baton uses this one's sockets, so that
// closing them must leave their paths and the fd store alone.
func (s *supervisor) sharing() bool {
	if s.m == nil {
		return s.parent != 0
	}
	return s.m.Sharing()
}

// close releases what newSupervisor acquired. Every worker has exited by
// then, or was never started.
func (s *supervisor) close() {
	if s.spawner != nil {
		s.spawner.Close()
	}
	if s.control != nil {
		s.control.close(s.sharing())
	}
	s.metrics.close()
	if s.fromWorkers != nil {
		s.fromWorkers.Close()
	}
	if s.devNull >= 0 {
		unix.Close(s.devNull)
	}
	if s.rr != nil {
		s.rr.Close()
	}
	closeListeners(s.listeners, s.sharing())
	if !s.sharing() {
		s.dir.remove()
	}
	if s.journal != nil {
		s.journal.close()
	}
	if s.closeOut != nil {
		s.closeOut()
	}
}

func (s *supervisor) run(ctx context.Context, cfg *config.Config, signals <-chan os.Signal) error {
	sigchld := notifySIGCHLD()
	defer signal.Stop(sigchld)
	s.goTask(func() { s.reaper.run(sigchld, s.events, s.quit, s.syncNotify) })
	s.goTask(s.readNotify)
	if s.parent == 0 {
		// A baton taking over answers once in charge.
		s.serveControl()
		s.serveMetrics()
	}
	defer func() {
		close(s.quit)
		s.fromWorkers.Close() // unblocks readNotify
		s.control.close(s.sharing())
		s.metrics.close()
		s.tasks.Wait()
		s.waitOutputs()
	}()

	s.log.Info("starting workers", "count", cfg.Worker.Count, "command", strings.Join(cfg.Worker.Command, " "),
		"listeners", listenerNames(cfg), "control", s.control.path, "version", s.version)
	if err := s.m.Start(cfg); err != nil {
		s.log.Error("giving up", "err", err)
		return err
	}
	done := ctx.Done()
	// At most every trimAfter, after work (timers aside), baton gives back
	// the memory that work left resident; every trimIdle ticks all the same.
	trim := time.NewTicker(trimAfter)
	defer trim.Stop()
	idle := idleTrim{worked: true}
	for s.ready.Store(s.m.Ready()); !s.m.Done(); s.ready.Store(s.m.Ready()) {
		select {
		case <-trim.C:
			if idle.tick() {
				s.trimMemory()
			}
			continue
		case <-done:
			done = nil
			s.m.Step(lifecycle.Stop{})
		case sig, ok := <-signals:
			if !ok {
				signals = nil
				break
			}
			s.onSignal(sig)
		case ev := <-s.events:
			if c, ok := ev.(loopCall); ok {
				c.do() // a scrape, a status: not worth a trim
				break
			}
			if e, ok := ev.(lifecycle.Exited); ok {
				s.workerExited(e.PID)
			}
			if r, ok := ev.(lifecycle.Reload); ok && r.Reply != nil {
				// Answered once baton gave back what the reload touched:
				// reloads one after another do not pile it up.
				answer := r.Reply
				r.Reply = func(res lifecycle.Result) { s.trimMemory(); answer(res) }
				ev = r
			}
			if _, ok := ev.(lifecycle.Timer); !ok {
				idle.work()
			}
			s.m.Step(ev.(lifecycle.Event))
		}
	}
	return s.m.Finish()
}

// The supervisor is the Machine's lifecycle.Env: each of its methods is
// an action the Machine decided on, carried out in the file of its part
// (processes.go, sockets.go, systemd.go, upgrade.go; Route in
// balance.go). They run on the loop's goroutine; what takes time runs in
// a task that posts its outcome. The clock and the timers are the
// loop's own.
var _ lifecycle.Env = (*supervisor)(nil)

func (s *supervisor) Now() time.Time { return time.Now() }

func (s *supervisor) After(d time.Duration, t lifecycle.Timer) func() {
	tm := time.AfterFunc(d, func() { s.post(t) })
	return func() { tm.Stop() }
}

// trimAfter is how often baton may trim its memory; trimIdle, in ticks of
// trimAfter, how often it trims without work all the same: the runtime's
// own periodic work (a collection every two minutes) faults pages back in.
const (
	trimAfter = time.Second
	trimIdle  = 60
)

// idleTrim says when to trim: at a tick after one with work, or trimIdle
// ticks after the last trim.
type idleTrim struct {
	worked bool
	since  int // ticks since the last trim
}

func (t *idleTrim) work() { t.worked = true }

func (t *idleTrim) tick() bool {
	t.since++
	due := t.worked || t.since >= trimIdle
	t.worked = false
	if due {
		t.since = 0
	}
	return due
}

// trimMemory returns what the last burst of work left resident: the heap
// the garbage collector freed and the executable's pages it faulted in
// (memtrim).
func (s *supervisor) trimMemory() {
	memtrim.Release()
	s.trimmed.Store(time.Now().UnixNano())
}

func (s *supervisor) goTask(f func()) {
	s.tasks.Add(1)
	go func() {
		defer s.tasks.Done()
		f()
	}()
}

// The loop reads lifecycle.Events, which go to the Machine, and
// loopCalls, which run on the loop for whoever needs the state the loop
// owns (stats, status, probes).

// post hands an event to the loop, or drops it once the loop has ended.
func (s *supervisor) post(ev any) {
	select {
	case s.events <- ev:
	case <-s.quit:
	}
}

// loopCall runs do on the loop's goroutine, the one that owns the
// Machine.
type loopCall struct{ do func() }

// inLoop runs f on the loop and waits for it, at most timeout in all;
// false if the loop did not get to it (stopped, or hung).
func (s *supervisor) inLoop(f func(), timeout time.Duration) bool {
	done := make(chan struct{})
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case s.events <- loopCall{do: func() { f(); close(done) }}:
	case <-s.quit:
		return false
	case <-timer.C:
		return false
	}
	select {
	case <-done:
		return true
	case <-s.quit:
		return false
	case <-timer.C:
		return false
	}
}

// onSignal turns a signal into the Machine's event.
func (s *supervisor) onSignal(sig os.Signal) {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		s.m.Step(lifecycle.Stop{Signal: sig.String()})
	case syscall.SIGHUP:
		s.m.Step(lifecycle.Reload{})
	case syscall.SIGUSR2:
		s.m.Step(lifecycle.Reload{Upgrade: true})
	default:
		s.log.Debug("signal ignored", "signal", sig.String())
	}
}

func listenerNames(cfg *config.Config) string {
	names := make([]string, len(cfg.Listen))
	for i, l := range cfg.Listen {
		names[i] = l.Name
	}
	return strings.Join(names, ",")
}
