package spawn

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/excerpt"
)

// ConnsEnv names the descriptor of a worker's round-robin channel
// (worker.balance = "round-robin"), which baton places right after the
// LISTEN_FDS listeners; ConnsListenersEnv lists the stream listeners whose
// connections come over it, separated by ':' as in LISTEN_FDNAMES.
const (
	ConnsEnv          = "BATON_CONNS_FD"
	ConnsListenersEnv = "BATON_CONNS_LISTENERS"
)

// ReadyEnv names the descriptor a worker with worker.ready = "fd" writes
// a line to once it serves (s6's notification-fd convention). Like the
// round-robin channel it lands right after the listeners.
const ReadyEnv = "BATON_READY_FD"

// ShimCommand is the subcommand of the baton binary that runs ExecWorker.
const ShimCommand = "exec-worker"

// File is a descriptor to pass to a worker under a name.
type File struct {
	Name string
	Fd   int
}

// Spec describes one worker process to start.
type Spec struct {
	// Shim is the argv prefix that runs ExecWorker, e.g.
	// ["/usr/bin/baton", "exec-worker", "--"]; Command follows it.
	Shim    []string
	Command []string
	// Env is the complete environment, LISTEN_FDS and LISTEN_FDNAMES
	// included (see Env); the shim adds LISTEN_PID.
	Env []string
	Dir string
	// Listeners land at descriptors 3, 4, ... in this order.
	Listeners []File
	// Extra descriptors land right after the listeners, in this order:
	// the round-robin channel (ConnsEnv) and the readiness pipe
	// (ReadyEnv), each named in the environment by its number.
	Extra []int
	// Stdin, Stdout and Stderr are descriptors for 0, 1 and 2.
	Stdin, Stdout, Stderr int
}

// Spawner starts worker processes from one OS thread that lives as long as
// the Spawner. The kernel delivers a child's parent-death signal when the
// thread that forked it exits, not the process, so forking from arbitrary
// goroutines would let a worker be killed whenever the Go scheduler retires
// a thread.
type Spawner struct {
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	spec  Spec
	reply chan spawnResult
}

type spawnResult struct {
	pid int
	err error
}

// NewSpawner starts the forking thread. Close ends it.
func NewSpawner() *Spawner {
	s := &Spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	go s.loop()
	return s
}

// loop ends when Close closes reqs. It never unlocks the thread, so the Go
// runtime terminates the thread when loop returns.
func (s *Spawner) loop() {
	runtime.LockOSThread()
	defer close(s.done)
	for r := range s.reqs {
		pid, err := start(r.spec)
		r.reply <- spawnResult{pid, err}
	}
}

// Close ends the forking thread. Workers still running at that point get
// SIGKILL from the kernel, so call it only once every worker has exited.
func (s *Spawner) Close() {
	close(s.reqs)
	<-s.done
}

// Start forks and execs a worker in its own process group, with SIGKILL as
// its parent-death signal, and returns its pid. Nothing waits for it: the
// caller reaps it.
func (s *Spawner) Start(spec Spec) (int, error) {
	reply := make(chan spawnResult, 1)
	s.reqs <- spawnReq{spec, reply}
	r := <-reply
	return r.pid, r.err
}

func start(spec Spec) (int, error) {
	if len(spec.Command) == 0 {
		return 0, errors.New("spawn: start worker: empty command")
	}
	argv := append(append([]string(nil), spec.Shim...), spec.Command...)
	files := []uintptr{uintptr(spec.Stdin), uintptr(spec.Stdout), uintptr(spec.Stderr)}
	for _, l := range spec.Listeners {
		files = append(files, uintptr(l.Fd))
	}
	for _, fd := range spec.Extra {
		files = append(files, uintptr(fd))
	}
	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{
		Dir:   spec.Dir,
		Env:   spec.Env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: syscall.SIGKILL,
		},
	})
	if err != nil {
		return 0, fmt.Errorf("spawn: start worker %s: %w", excerpt.Quote(spec.Command[0]), os.NewSyscallError("fork/exec "+argv[0], err))
	}
	return pid, nil
}

// withoutVars lists the variables a worker must never inherit from baton:
// systemd's own socket activation, notify socket and watchdog are baton's,
// and JOURNAL_STREAM would claim the worker's output goes to the journal
// when it goes through baton.
var withoutVars = []string{
	"LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID",
	"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
	"TABLEFLIP_HAS_PARENT_7DIU3", // baton's own self-upgrade (a Go worker may use tableflip too)
}

// Env builds a worker's environment: base without the variables that belong
// to baton (and without BATON_*, which only baton sets), then extra
// ("KEY=VALUE"), then LISTEN_FDS and LISTEN_FDNAMES for listeners. Each
// key appears once, with its last value: getenv returns the first copy, so
// a duplicate would let base override the configuration.
func Env(base []string, extra []string, listeners []File) []string {
	names := make([]string, len(listeners))
	for i, l := range listeners {
		names[i] = l.Name
	}
	all := make([]string, 0, len(base)+len(extra)+2)
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(withoutVars, k) && !strings.HasPrefix(k, "BATON_") {
			all = append(all, kv)
		}
	}
	all = append(all, extra...)
	all = append(all,
		"LISTEN_FDS="+strconv.Itoa(len(listeners)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"))
	last := map[string]int{}
	for i, kv := range all {
		k, _, _ := strings.Cut(kv, "=")
		last[k] = i
	}
	out := all[:0]
	for i, kv := range all {
		k, _, _ := strings.Cut(kv, "=")
		if last[k] == i {
			out = append(out, kv)
		}
	}
	return out
}

// ExecWorker is the shim: it sets LISTEN_PID to its own pid, which the real
// command keeps across exec, and replaces itself with argv. The command
// gets descriptors 0, 1, 2 and the LISTEN_FDS listeners from 3 on, as
// under systemd, and nothing else: any other descriptor the supervisor
// inherited without close-on-exec (from the shell that started it) is
// closed at exec. It returns only on failure.
func ExecWorker(argv []string) error {
	if len(argv) == 0 {
		return errors.New("spawn: exec-worker: no command given")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("spawn: exec-worker: %w", err)
	}
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	keep := listenFdsStart + max(n, 0)
	// The extra descriptors, right after the listeners, in either order.
	for range 2 {
		for _, env := range []string{ConnsEnv, ReadyEnv} {
			if c, err := strconv.Atoi(os.Getenv(env)); err == nil && c == keep {
				keep++
			}
		}
	}
	if err := closeOnExecFrom(keep); err != nil {
		return fmt.Errorf("spawn: exec-worker: %w", err)
	}
	env := append(os.Environ(), "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	if err := syscall.Exec(path, argv, env); err != nil {
		return fmt.Errorf("spawn: exec-worker: %w", os.NewSyscallError("exec "+path, err))
	}
	return nil
}

// DupFd returns a close-on-exec duplicate (at 3 or above) of c's descriptor.
// It goes through SyscallConn, never Fd: Fd switches a non-blocking socket
// to blocking mode, and that mode is shared by every process holding the
// socket.
func DupFd(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("spawn: dup: %w", err)
	}
	dup := -1
	var dupErr error
	if err := rc.Control(func(fd uintptr) {
		dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3)
	}); err != nil {
		return -1, fmt.Errorf("spawn: dup: %w", err)
	}
	if dupErr != nil {
		return -1, fmt.Errorf("spawn: dup: %w", os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", dupErr))
	}
	return dup, nil
}

// listenFdsStart is the first listener's descriptor (SD_LISTEN_FDS_START).
const listenFdsStart = 3

// closeOnExecFrom marks every descriptor from first on close-on-exec.
func closeOnExecFrom(first int) error {
	err := unix.CloseRange(uint(first), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	// Before Linux 5.11: one by one.
	ents, rerr := os.ReadDir("/proc/self/fd")
	if rerr != nil {
		return fmt.Errorf("close stray descriptors: %w (and %w)", os.NewSyscallError("close_range", err), rerr)
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= first {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}
