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

	"github.com/batonhq/baton/handoff"
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
	gen     int
	pid     int
	state   workerState
	started time.Time
	// status is the worker's last STATUS= message.
	status string
	timers []*time.Timer
}

func (w *worker) String() string { return fmt.Sprintf("worker %d (pid %d)", w.slot, w.pid) }

func (w *worker) stopTimers() {
	for _, t := range w.timers {
		t.Stop()
	}
	w.timers = nil
}

// signalGroup signals the worker's whole process group, so that whatever it
// started goes too.
func (w *worker) signalGroup(sig unix.Signal) {
	unix.Kill(-w.pid, sig)
}

func itoa(n int) string { return strconv.Itoa(n) }

// workerEnv is what baton adds to a worker's environment besides the
// listeners.
func workerEnv(notifyPath string, slot, gen int, drain time.Duration, env map[string]string) []string {
	out := []string{
		"NOTIFY_SOCKET=" + notifyPath,
		"BATON_WORKER=" + itoa(slot),
		"BATON_GENERATION=" + itoa(gen),
		"BATON_DRAIN_TIMEOUT=" + workerDrainDeadline(drain).String(),
	}
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

// spec builds the handoff spec for a worker.
func (s *supervisor) spec(slot, gen int, stdout int) handoff.Spec {
	files := make([]handoff.File, len(s.listeners))
	for i, l := range s.listeners {
		files[i] = handoff.File{Name: l.name, Fd: l.fd}
	}
	w := s.cfg.Worker
	return handoff.Spec{
		Shim:      s.shim,
		Command:   w.Command,
		Env:       handoff.Env(os.Environ(), workerEnv(s.notify.Path(), slot, gen, w.DrainTimeout.Std(), w.Env), files),
		Listeners: files,
		Stdin:     s.devNull,
		Stdout:    stdout,
		Stderr:    stdout,
	}
}
