package supervisor

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/lifecycle"
	"github.com/batonhq/baton/internal/linering"
	"github.com/batonhq/baton/internal/roundrobin"
	"github.com/batonhq/baton/internal/spawn"
	"github.com/batonhq/baton/internal/steer"
)

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

// readers are the forwarders' line readers, reused: each reload would
// otherwise allocate two of maxLine per worker.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, maxLine) }}

// lineWriter writes whole lines to one writer from many forwarders.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
	// json writes each line as a JSON object (jsonLine) instead of
	// prefixed.
	json bool
}

// write writes one of a worker's lines: l, whose raw bytes are line.
func (lw *lineWriter) write(prefix string, l linering.Line, line []byte) {
	if !lw.json {
		lw.writeLine(prefix, line)
		return
	}
	b := jsonLine(l)
	lw.mu.Lock()
	lw.w.Write(b)
	lw.mu.Unlock()
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

// origin says whose lines a forwarder copies, as text and journald name
// it.
type origin struct {
	prefix  string // "[worker SLOT pid PID] "
	program string // the worker command's base name: SYSLOG_IDENTIFIER
}

// forward copies one of a worker's output streams line by line to out,
// prefixed with its slot and pid or as JSON (or, when not nil, to
// journal, with fields), and keeps each line in ring for `baton
// logs` (a line longer than the reader's buffer only once, cut). It ends
// at end of file, when every process holding the write end is gone, or
// when r is closed.
func forward(r *os.File, from origin, out *lineWriter, journal *journalSink, ring *linering.Ring, keep linering.Line) {
	defer r.Close()
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil)
		readers.Put(br)
	}()
	continued := false
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			text := string(bytes.TrimSuffix(line, []byte("\n")))
			keep.Time, keep.Text, keep.Cut = time.Now(), text, err == bufio.ErrBufferFull
			if journal != nil {
				journal.line(keep, from.program)
			} else {
				out.write(from.prefix, keep, line)
			}
			if !continued {
				ring.Add(keep)
			}
		}
		continued = err == bufio.ErrBufferFull
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// spec builds the handoff spec for the worker of a generation's slot:
// each listener (or, with reuseport, the socket of a TCP one's group
// picked for it),
// with round-robin the channel ch instead of the stream listeners, and
// with ready = "fd" the readiness pipe's write end readyFd (-1: none).
func (s *supervisor) spec(w lifecycle.Spawn, picks map[*listener]*steer.Socket, ch *roundrobin.Channel, readyFd, stdout, stderr int) spawn.Spec {
	var files []spawn.File
	var extra []string
	var passed []string
	for _, c := range w.Config.Listen {
		l := s.findListener(c)
		fd := l.fd
		switch {
		case passedOn(s.balance, c):
			passed = append(passed, c.Name)
			continue
		case picks[l] != nil:
			fd = picks[l].FD
		}
		files = append(files, spawn.File{Name: c.Name, Fd: fd})
	}
	cw := w.Config.Worker
	spec := spawn.Spec{
		Shim:      s.shim,
		Command:   cw.Command,
		Listeners: files,
		Stdin:     s.devNull,
		Stdout:    stdout,
		Stderr:    stderr,
	}
	if ch != nil {
		// Right after the listeners; Node.js takes it as its IPC channel.
		at := itoa(3 + len(files) + len(spec.Extra))
		spec.Extra = append(spec.Extra, ch.WorkerFd)
		extra = append(extra, spawn.ConnsEnv+"="+at, spawn.ConnsListenersEnv+"="+strings.Join(passed, ":"), "NODE_CHANNEL_FD="+at)
	}
	if readyFd >= 0 {
		extra = append(extra, spawn.ReadyEnv+"="+itoa(3+len(files)+len(spec.Extra)))
		spec.Extra = append(spec.Extra, readyFd)
	}
	spec.Env = spawn.Env(os.Environ(), append(workerEnv(s.fromWorkers.Path(), w.Slot, w.Generation, cw), extra...), files)
	return spec
}

// channel makes the round-robin channel of a worker of cfg, nil when its
// connections are not passed.
func (s *supervisor) channel(cfg *config.Config) (*roundrobin.Channel, error) {
	if s.rr == nil {
		return nil, nil
	}
	listeners := map[int]string{}
	for _, c := range cfg.Listen {
		if passedOn(s.balance, c) {
			listeners[s.findListener(c).fd] = c.Name
		}
	}
	return s.rr.Channel(listeners, cfg.Worker.ChannelTimeout.Std())
}

// readReady waits for the first line a worker writes to its readiness
// pipe (a bare newline, as s6's notification-fd has it, or READY=1: any
// line) and posts it as a ReadyLine: whether that makes the worker ready
// is the Machine's decision. X_BATON_DRAINS_ACCEPTED=1 among the lines
// of that read is taken too (balance.go). It ends at the end of the
// pipe, or once r is closed.
func (s *supervisor) readReady(r *os.File, pid int) {
	defer r.Close()
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		if bytes.IndexByte(buf[:n], '\n') >= 0 {
			for line := range bytes.Lines(buf[:n]) {
				if string(bytes.TrimSuffix(line, []byte("\n"))) == drainsAcceptedKey+"=1" {
					s.post(loopCall{do: func() { s.DrainsAccepted(pid) }})
				}
			}
			s.post(lifecycle.ReadyLine{PID: pid})
			return
		}
		if err != nil {
			return
		}
	}
}
