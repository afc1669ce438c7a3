package supervisor

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/spawn"
)

type workerState int

const (
	starting workerState = iota // started, not ready yet
	ready                       // serving
	draining                    // told to stop, or leaving on its own
)

func (s workerState) String() string {
	return [...]string{"starting", "ready", "draining"}[s]
}

// worker is one worker process. Only the event loop touches it.
type worker struct {
	slot    int
	gen     *generation
	pid     int
	state   workerState
	started time.Time
	// status is the worker's last STATUS= message.
	status string
	timers []*time.Timer
	// termSent is set once SIGTERM went to its group.
	termSent bool
	// watchdog fires when no WATCHDOG=1 came for worker.watchdog; wdSeq
	// tells a stale expiry from the current one.
	watchdog *time.Timer
	wdSeq    int
	// replaces is the worker this one was started to replace (new first);
	// once this one is ready, that one gets thenSignal.
	replaces   *worker
	thenSignal unix.Signal
}

func (w *worker) String() string { return fmt.Sprintf("worker %d (pid %d)", w.slot, w.pid) }

func (w *worker) stopTimers() {
	for _, t := range w.timers {
		t.Stop()
	}
	w.timers = nil
	if w.watchdog != nil {
		w.watchdog.Stop()
	}
}

// signalGroup signals the worker's whole process group, so that whatever it
// started goes too.
func (w *worker) signalGroup(sig unix.Signal) {
	unix.Kill(-w.pid, sig)
}

func itoa(n int) string { return strconv.Itoa(n) }

// workerEnv is what baton adds to a worker's environment besides the
// listeners.
func workerEnv(notifyPath string, slot, gen int, w config.Worker) []string {
	out := []string{
		"NOTIFY_SOCKET=" + notifyPath,
		"BATON_WORKER=" + itoa(slot),
		"BATON_GENERATION=" + itoa(gen),
		"BATON_DRAIN_TIMEOUT=" + workerDrainDeadline(w.DrainTimeout.Std()).String(),
	}
	if w.Watchdog > 0 {
		// As systemd does, so sd_watchdog_enabled() works in the worker.
		out = append(out, "WATCHDOG_USEC="+strconv.FormatInt(w.Watchdog.Std().Microseconds(), 10))
	}
	env := w.Env
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

// workerDrainDeadline is the drain deadline a worker is told: shorter than
// baton's own by a tenth (at most a second), so a worker that honours it
// closes its last connections itself and exits before baton's SIGKILL.
func workerDrainDeadline(d time.Duration) time.Duration {
	return d - min(d/10, time.Second)
}

// outputPipe returns the read end, pollable so that closing it unblocks a
// reader, and the write end as a raw blocking descriptor for the child's
// stdout and stderr.
func outputPipe() (*os.File, int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, -1, os.NewSyscallError("pipe2", err)
	}
	if err := unix.SetNonblock(p[0], true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, -1, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(p[0]), "worker-output"), p[1], nil
}

// maxLine bounds a forwarded line; a longer one is split.
const maxLine = 64 << 10

// lineWriter writes whole lines to one writer from many forwarders.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lineWriter) writeLine(prefix string, line []byte) {
	buf := make([]byte, 0, len(prefix)+len(line)+1)
	buf = append(append(buf, prefix...), line...)
	if len(line) == 0 || line[len(line)-1] != '\n' {
		buf = append(buf, '\n')
	}
	lw.mu.Lock()
	lw.w.Write(buf)
	lw.mu.Unlock()
}

// forward copies a worker's output line by line, prefixed with its slot
// and pid. It ends at end of file, when every process holding the write
// end is gone, or when r is closed.
func forward(r *os.File, prefix string, out *lineWriter) {
	defer r.Close()
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			out.writeLine(prefix, line)
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// spec builds the handoff spec for a worker of g.
func (s *supervisor) spec(g *generation, slot int, stdout int) spawn.Spec {
	files := make([]spawn.File, len(g.ls))
	for i, l := range g.ls {
		files[i] = spawn.File{Name: g.cfg.Listen[i].Name, Fd: l.fd}
	}
	w := g.cfg.Worker
	return spawn.Spec{
		Shim:      s.shim,
		Command:   w.Command,
		Env:       spawn.Env(os.Environ(), workerEnv(s.fromWorkers.Path(), slot, g.n, w), files),
		Listeners: files,
		Stdin:     s.devNull,
		Stdout:    stdout,
		Stderr:    stdout,
	}
}

// startWorker starts the worker of g's slot.
func (s *supervisor) startWorker(g *generation, slot int) (*worker, error) {
	r, wfd, err := outputPipe()
	if err != nil {
		return nil, fmt.Errorf("supervisor: start worker %d: %w", slot, err)
	}
	pid, err := s.spawner.Start(s.spec(g, slot, wfd))
	unix.Close(wfd)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("supervisor: start worker %d: %w", slot, err)
	}
	w := &worker{slot: slot, gen: g, pid: pid, started: time.Now()}
	s.workers[pid] = w
	g.slots[slot] = w
	g.live++
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
	if d := g.cfg.Worker.ReadyDelay; d > 0 {
		w.timers = append(w.timers, s.after(d, timerEvent{kind: readyDelayDone, w: w}))
	}
	s.armWatchdog(w)
	s.log.Info("worker started", "slot", slot, "pid", pid, "generation", g.n)
	return w, nil
}

// armWatchdog (re)starts the worker's watchdog, if worker.watchdog is set.
func (s *supervisor) armWatchdog(w *worker) {
	d := w.gen.cfg.Worker.Watchdog.Std()
	if d <= 0 {
		return
	}
	if w.watchdog != nil {
		w.watchdog.Stop()
	}
	w.wdSeq++
	w.watchdog = s.after(d, timerEvent{kind: watchdogExpired, w: w, seq: w.wdSeq})
}

// replaceFirst starts w's replacement and, once that is ready, sends w
// then: SIGTERM to drain it (it grew too big), SIGKILL (it hangs). w's
// drain deadline applies meanwhile, in case no replacement gets ready.
func (s *supervisor) replaceFirst(w *worker, why string, then unix.Signal) {
	g := w.gen
	if w.state == draining {
		return
	}
	if g != s.current || g.slots[w.slot] != w || s.phase == phaseStopping {
		w.signalGroup(then) // not serving: nothing to replace it for
		return
	}
	s.log.Warn("replacing worker", "slot", w.slot, "pid", w.pid, "generation", g.n, "why", why)
	w.state = draining
	s.armDrainDeadline(w)
	g.slots[w.slot] = nil
	if !s.spendRestart(fmt.Sprintf("%s %s", w, why)) {
		w.signalGroup(then)
		s.publishStatus()
		return
	}
	s.refill(g, w.slot, w, then)
	s.publishStatus()
}

// refill starts a worker in g's empty slot, to take over from old (if not
// nil): once the new one is ready, old gets then. When no worker can be
// started at all (fork or exec failed), old gets then at once and the
// slot is tried again after RespawnDelay.
func (s *supervisor) refill(g *generation, slot int, old *worker, then unix.Signal) {
	nw, err := s.startWorker(g, slot)
	if err != nil {
		s.log.Error("cannot start worker, retrying", "slot", slot, "err", err, "after", RespawnDelay)
		s.after(RespawnDelay, timerEvent{kind: respawnSlot, g: g, slot: slot})
		if old != nil {
			s.signalOld(old, then)
		}
		return
	}
	nw.replaces, nw.thenSignal = old, then
}

// signalOld sends sig to a worker being replaced, unless it has exited or
// was told to drain already.
func (s *supervisor) signalOld(old *worker, sig unix.Signal) {
	if s.workers[old.pid] != old || sig == unix.SIGTERM && old.termSent {
		return
	}
	if sig == unix.SIGTERM {
		old.termSent = true
	}
	old.signalGroup(sig)
}

// drainWorker sends SIGTERM to a worker that is not draining yet and arms
// its drain deadline.
func (s *supervisor) drainWorker(w *worker) {
	if w.termSent {
		return
	}
	w.state = draining
	s.signalOld(w, unix.SIGTERM)
	s.armDrainDeadline(w)
}

// armDrainDeadline kills w's group once its generation's drain_timeout has
// passed, if it is still there.
func (s *supervisor) armDrainDeadline(w *worker) {
	w.timers = append(w.timers, s.after(w.gen.cfg.Worker.DrainTimeout.Std(), timerEvent{kind: drainDeadline, w: w}))
}

func (s *supervisor) onExit(ev exitEvent) {
	// A child that exits may leave its own children to baton.
	defer s.sweepOrphans()
	w := s.workers[ev.pid]
	if w == nil {
		if s.reload != nil && s.reload.exits != nil {
			s.reload.exits[ev.pid] = describeExit(ev.status)
		}
		delete(s.orphans, ev.pid)
		s.log.Debug("reaped a child that is no worker", "pid", ev.pid, "how", describeExit(ev.status))
		return
	}
	delete(s.workers, ev.pid)
	s.exited[s.nexit%len(s.exited)] = ev.pid
	s.nexit++
	w.stopTimers()
	// Anything the worker left in its group is an orphan now.
	w.signalGroup(sigkill)
	g := w.gen
	g.live--
	how := describeExit(ev.status)
	if g.slots[w.slot] != w {
		// Replaced already: it was draining.
		s.log.Info("worker exited", "slot", w.slot, "pid", w.pid, "generation", g.n, "how", how)
		if g.state == genDraining && g.live == 0 {
			s.generationGone(g)
		}
		s.publishStatus()
		return
	}
	g.slots[w.slot] = nil
	g.lastExit[w.slot] = fmt.Sprintf("%s exited: %s", w, how)
	if g == s.next && s.current != nil {
		// A new worker that exits before its whole generation is ready
		// fails the reload, and does not use the restart budget.
		what := "before it was ready"
		if w.state == ready {
			what = "before its generation was ready"
		}
		s.abandonNext(fmt.Errorf("%s exited %s: %s", w, what, how))
		return
	}
	if s.phase == phaseStopping || g.state == genDraining {
		s.publishStatus()
		return
	}
	if !s.spendRestart(fmt.Sprintf("%s exited: %s", w, how)) {
		s.publishStatus()
		return
	}
	delay := s.backoff(w)
	s.log.Warn("worker exited unexpectedly, replacing it", "slot", w.slot, "pid", w.pid, "generation", g.n, "how", how, "after", delay)
	s.after(delay, timerEvent{kind: respawnSlot, g: g, slot: w.slot})
	s.publishStatus()
}

func (s *supervisor) markReady(w *worker) {
	w.state = ready
	g := w.gen
	s.log.Info("worker ready", "slot", w.slot, "pid", w.pid, "generation", g.n, "after", time.Since(w.started).Round(time.Millisecond))
	if old := w.replaces; old != nil {
		w.replaces = nil
		s.signalOld(old, w.thenSignal)
	}
	if g != s.next {
		s.publishStatus()
		return
	}
	if !g.allReady() {
		if err := s.startMore(g); err != nil {
			s.abandonNext(err)
			return
		}
		s.publishStatus()
		return
	}
	s.promote(g)
}

// promote makes a generation whose workers are all ready the serving one,
// and drains the one it replaces.
func (s *supervisor) promote(g *generation) {
	g.deadline.Stop()
	g.state = genServing
	old := s.current
	s.current, s.next = g, nil
	s.cfg = g.cfg
	if old != nil && s.gaveUp {
		s.log.Info("restart budget: a reload brings a full generation back, restarts resume")
		s.gaveUp = false
	}
	if old == nil {
		s.phase = phaseRunning
		s.log.Info("all workers ready", "count", len(g.slots), "generation", g.n)
		s.status = s.statusLine()
		if s.takingOver {
			s.takeOver()
			return
		}
		s.sendSystemd("READY=1\nSTATUS=" + s.status)
		if s.upg != nil {
			// Until then tableflip refuses to upgrade.
			if err := s.upg.Ready(); err != nil {
				s.log.Warn("self-upgrades will not work", "err", err)
			}
		}
		s.runPending()
		return
	}
	s.drainGeneration(old, "replaced by "+g.String())
	s.finishReload(nil)
}

// retire takes a worker that announced it is leaving (STOPPING=1) out of
// its slot and starts its replacement at once, before it has finished
// draining: the socket never lacks a ready worker for longer than the
// replacement takes to start. Once the replacement is ready the leaving
// worker gets SIGTERM, so that it drains even when its STOPPING=1 came
// from a process it started rather than from the one that serves (a
// worker draining already ignores it).
func (s *supervisor) retire(w *worker) {
	if w.state == draining {
		return
	}
	w.state = draining
	g := w.gen
	s.armDrainDeadline(w)
	if g.slots[w.slot] != w || g != s.current || s.phase == phaseStopping {
		return // a starting worker leaving fails its generation when it exits
	}
	g.slots[w.slot] = nil
	if !s.spendRestart(fmt.Sprintf("%s is leaving", w)) {
		s.signalOld(w, unix.SIGTERM) // no replacement: let it drain now
		s.publishStatus()
		return
	}
	s.log.Info("worker is leaving, starting its replacement", "slot", w.slot, "pid", w.pid, "generation", g.n)
	s.refill(g, w.slot, w, unix.SIGTERM)
	s.publishStatus()
}
