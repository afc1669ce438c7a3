package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/lifecycle"
	"github.com/batonhq/baton/internal/linering"
	"github.com/batonhq/baton/internal/roundrobin"
	"github.com/batonhq/baton/internal/spawn"
	"github.com/batonhq/baton/internal/systemd"
)

// processes is the supervisor's part that carries out
// lifecycle.Processes: it starts the workers (what each one gets is
// worker.go's), signals them, reaps every child (reaper.go), forwards
// the workers' output and reads the notify socket they report to.
type processes struct {
	// shim is the argv prefix that runs spawn.ExecWorker.
	shim    []string
	spawner *spawn.Spawner
	reaper  *reaper
	devNull int
	// fromWorkers is the notify socket the workers send their state to.
	fromWorkers *systemd.NotifyServer

	out *lineWriter
	// ring keeps the workers' last lines for `baton logs`; journal, when
	// not nil, takes their lines instead of out.
	ring    *linering.Ring
	journal *journalSink
	// closeOut flushes the output buffer baton made itself, if any.
	closeOut func()
	outputs  sync.WaitGroup
	// readers are the output pipes whose forwarders are still running.
	readersMu sync.Mutex
	readers   map[*os.File]bool
}

// Start starts a worker, its standard output and error forwarded line by
// line.
func (s *supervisor) Start(w lifecycle.Spawn) (int, error) {
	// stdout, stderr and, with ready = "fd", the readiness pipe.
	n := 2
	if w.ReadyPipe {
		n = 3
	}
	reads := make([]*os.File, 0, n)
	writes := make([]int, 0, n)
	closeWrites := func() {
		for _, fd := range writes {
			unix.Close(fd)
		}
	}
	closeReads := func() {
		for _, r := range reads {
			r.Close()
		}
	}
	for range n {
		r, wfd, err := outputPipe()
		if err != nil {
			closeReads()
			closeWrites()
			return 0, err
		}
		reads, writes = append(reads, r), append(writes, wfd)
	}
	readyFd := -1
	if n == 3 {
		readyFd = writes[2]
	}
	picks, err := s.pick(w)
	var ch *roundrobin.Channel
	if err == nil {
		ch, err = s.channel(w.Config)
	}
	pid := 0
	if err == nil {
		pid, err = s.spawner.Start(s.spec(w, picks, ch, readyFd, writes[0], writes[1]))
	}
	closeWrites()
	if err != nil {
		closeReads()
		if ch != nil {
			ch.Discard()
		}
		return 0, err
	}
	if ch != nil {
		unix.Close(ch.WorkerFd)
		s.rr.Attach(pid, ch)
	}
	s.reaper.add(pid)
	s.hold(picks, pid, w.Slot)
	from := origin{prefix: fmt.Sprintf("[worker %d pid %d] ", w.Slot, pid), program: filepath.Base(w.Config.Worker.Command[0])}
	for i, r := range reads[:2] {
		keep := linering.Line{Slot: w.Slot, Generation: w.Generation, PID: pid, Stream: [...]string{"stdout", "stderr"}[i]}
		s.track(r, func() { forward(r, from, s.out, s.journal, s.ring, keep) })
	}
	if n == 3 {
		r := reads[2]
		s.track(r, func() { s.readReady(r, pid) })
	}
	return pid, nil
}

// track runs read on its own goroutine, for a pipe from a worker that
// waitOutputs closes if a process that escaped the worker's group holds
// its other end.
func (s *supervisor) track(r *os.File, read func()) {
	s.outputs.Add(1)
	s.readersMu.Lock()
	s.readers[r] = true
	s.readersMu.Unlock()
	go func() {
		defer s.outputs.Done()
		read()
		s.readersMu.Lock()
		delete(s.readers, r)
		s.readersMu.Unlock()
	}()
}

func unixSignal(sig lifecycle.Signal) unix.Signal {
	switch sig {
	case lifecycle.SIGTERM:
		return unix.SIGTERM
	case lifecycle.SIGKILL:
		return unix.SIGKILL
	case lifecycle.SIGHUP:
		return unix.SIGHUP
	}
	panic("supervisor: unknown signal " + sig.String())
}

func (s *supervisor) Signal(pid int, sig lifecycle.Signal, to lifecycle.Target) {
	if s.rr != nil {
		// Every signal a worker gets ends its share of connections, before
		// it can act on it.
		s.rr.Detach(pid)
	}
	s.forget(pid)
	if s.groups.Leave(pid, sig) {
		// Its sockets get no new connection: it is told once it has
		// accepted what waits in them.
		s.signalDrained(pid, func() { s.kill(pid, sig, to) })
		return
	}
	s.kill(pid, sig, to)
}

func (s *supervisor) kill(pid int, sig lifecycle.Signal, to lifecycle.Target) {
	us := unixSignal(sig)
	switch to {
	case lifecycle.Group:
		unix.Kill(-pid, us)
	case lifecycle.Orphan:
		if pgid, err := unix.Getpgid(pid); err == nil && pgid == pid {
			unix.Kill(-pid, us)
		}
		unix.Kill(pid, us)
	default:
		unix.Kill(pid, us)
	}
}

func (s *supervisor) Children() []int      { return childPIDs() }
func (s *supervisor) ParentOf(pid int) int { return parentPID(pid) }
func (s *supervisor) RSS(pid int) int64    { return processRSS(pid) }

func (s *supervisor) readNotify() {
	for {
		m, err := s.fromWorkers.Receive()
		if err != nil {
			return // closed
		}
		s.post(lifecycle.Notified{PID: m.PID, UID: m.UID, Fields: m.Fields})
	}
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

// What /proc says about processes: the Machine's eyes on its children.

// processRSS returns a process's resident memory in bytes, 0 if unknown.
func processRSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// statFields returns the fields of /proc/PID/stat after the command
// name (state, ppid, ...), nil if unknown. The name is in parentheses and
// may itself contain ") ": the fields start after the last ')'.
func statFields(pid int) [][]byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return bytes.Fields(b[i+1:])
}

// parentPID reads a process's parent, or 0.
func parentPID(pid int) int {
	f := statFields(pid)
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(string(f[1]))
	return ppid
}

// clockTicks is USER_HZ, the unit of /proc's CPU times on every Linux.
const clockTicks = 100

// processCPU returns a process's user and system CPU time in seconds
// (stat's utime and stime), 0 if unknown.
func processCPU(pid int) float64 {
	f := statFields(pid)
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(string(f[11]), 10, 64)
	stime, _ := strconv.ParseInt(string(f[12]), 10, 64)
	return float64(utime+stime) / clockTicks
}

// childPIDs returns this process's children, zombies included.
func childPIDs() []int {
	var pids []int
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	if len(tasks) > 0 {
		return pids
	}
	// A kernel without CONFIG_PROC_CHILDREN: every process's parent.
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && parentPID(pid) == self {
			pids = append(pids, pid)
		}
	}
	return pids
}
