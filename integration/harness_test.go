package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var raceEnabled bool

// bin holds the paths of the binaries built for this test run.
var bin struct {
	dir, baton, hello, echo, greeter string
}

// repoRoot is the module's root directory.
var repoRoot string

func TestMain(m *testing.M) {
	if path := os.Getenv(holdControlEnv); path != "" {
		os.Exit(holdControl(path)) // a helper process of TestControlFlood
	}
	if addr := os.Getenv(idleFloodEnv); addr != "" {
		os.Exit(idleFlood(addr)) // a helper process of TestProbesAnswerUnderIdleFlood
	}
	if path := os.Getenv(notifyFloodEnv); path != "" {
		os.Exit(notifyFlood(path)) // a helper process of BenchmarkNotifyFlood
	}
	if os.Getenv(hostileNotifyEnv) != "" && len(os.Args) > 1 {
		os.Exit(hostileNotify(os.Args[1:])) // a worker of TestHostileNotifyDatagrams
	}
	if addr := os.Getenv(intruderEnv); addr != "" {
		os.Exit(intrude(addr)) // a helper process of TestReusePortIntruder
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = filepath.Dir(wd)
	bin.dir, err = os.MkdirTemp("", "baton-it-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(bin.dir)
	bin.baton = filepath.Join(bin.dir, "baton")
	bin.hello = filepath.Join(bin.dir, "hello")
	bin.echo = filepath.Join(bin.dir, "echo")
	bin.greeter = filepath.Join(bin.dir, "greeter")
	// baton is built as the test binary is (-race under make test); the
	// example workers without the race detector. Under load they took
	// most of the CPU of this CPU-bound package (a race-built hello costs
	// several times a plain one per request), and their own packages'
	// tests (examples/..., drain) race-test the same code under load.
	for out, pkg := range map[string]string{bin.baton: "./cmd/baton", bin.hello: "./examples/hello", bin.echo: "./examples/echo", bin.greeter: "./examples/greeter"} {
		args := []string{"build", "-o", out}
		if raceEnabled && out == bin.baton {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Dir = repoRoot
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
			return 1
		}
	}
	return m.Run()
}

// nextVersion is the version of the baton batonNext builds.
const nextVersion = "0.1.0-it-next"

// lazyBuild is a build of ./cmd/baton made on first use.
type lazyBuild struct {
	env  []string // beside the test's own
	once sync.Once
	path string
	err  error
}

// get builds ./cmd/baton as name in the binaries' directory, once, with
// the race detector as the test binary has it unless race is false.
func (b *lazyBuild) get(t testing.TB, name string, race bool, flags ...string) string {
	t.Helper()
	b.once.Do(func() {
		path := filepath.Join(bin.dir, name)
		args := append([]string{"build", "-o", path}, flags...)
		if race && raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/baton")...)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build ./cmd/baton %v: %w\n%s", flags, err, out)
			return
		}
		b.path = path
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

var (
	next, plain lazyBuild
	static      = lazyBuild{env: []string{"CGO_ENABLED=0"}}
)

// batonNext returns a second build of baton that says it is nextVersion
// (-ldflags "-X main.version=..."), built on first use: a baton upgraded
// to it shows which executable it runs.
func batonNext(t testing.TB) string {
	t.Helper()
	return next.get(t, "baton-next", true, "-ldflags", "-X main.version="+nextVersion)
}

// batonPlain returns a build of baton without the race detector, whose
// shadow memory would hide baton's own: for tests of its memory use.
func batonPlain(t testing.TB) string {
	t.Helper()
	return plain.get(t, "baton-plain", false)
}

// batonStatic returns the build `make build` ships (static, no race
// detector), built on first use: for tests of what it holds resident.
func batonStatic(t testing.TB) string {
	t.Helper()
	return static.get(t, "baton-static", false)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// logLines collects a process's output and lets tests wait for a line.
type logLines struct {
	t     testing.TB
	name  string
	mu    sync.Mutex
	lines []string
	added chan struct{} // closed and replaced on every new line
	done  chan struct{} // closed at EOF
}

func newLogLines(t testing.TB, name string, r io.Reader) *logLines {
	l := &logLines{t: t, name: name, added: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			close(l.added)
			l.added = make(chan struct{})
			l.mu.Unlock()
		}
	}()
	return l
}

// wait returns the first line (from the start, or after skipping `from`
// lines) matching re, waiting up to d for it.
func (l *logLines) waitFrom(from int, re *regexp.Regexp, d time.Duration) (string, int) {
	l.t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for i := from; i < len(l.lines); i++ {
			if re.MatchString(l.lines[i]) {
				line := l.lines[i]
				l.mu.Unlock()
				return line, i + 1
			}
		}
		from = len(l.lines)
		added := l.added
		l.mu.Unlock()
		select {
		case <-added:
		case <-l.done:
			l.mu.Lock()
			n := len(l.lines)
			l.mu.Unlock()
			if n == from {
				l.t.Fatalf("%s ended without a line matching %q:\n%s", l.name, re, l.String())
			}
		case <-deadline.C:
			l.t.Fatalf("no line matching %q from %s within %s:\n%s", re, l.name, d, l.String())
		}
	}
}

func (l *logLines) wait(re *regexp.Regexp, d time.Duration) string {
	l.t.Helper()
	line, _ := l.waitFrom(0, re, d)
	return line
}

// waitCount waits until at least n lines match re.
func (l *logLines) waitCount(re *regexp.Regexp, n int, d time.Duration) {
	l.t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		got := 0
		for _, s := range l.lines {
			if re.MatchString(s) {
				got++
			}
		}
		added := l.added
		l.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-added:
		case <-l.done:
			l.t.Fatalf("%s ended with %d of %d lines matching %q", l.name, got, n, re)
		case <-deadline.C:
			l.t.Fatalf("only %d of %d lines matching %q from %s within %s", got, n, re, l.name, d)
		}
	}
}

func (l *logLines) count(re *regexp.Regexp) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if re.MatchString(s) {
			n++
		}
	}
	return n
}

func (l *logLines) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// proc is a process started by a test, in its own process group, ended
// and checked in Cleanup.
type proc struct {
	t       testing.TB
	cmd     *exec.Cmd
	out     *logLines // stdout and stderr together
	outPipe *os.File  // the read end of their pipe
	exited  chan struct{}
	err     error // from Wait, valid once exited is closed
	seen    map[int]bool
	seenMu  sync.Mutex

	succMu     sync.Mutex
	successors []*successor // batons that took over from p (self-upgrade), oldest first
}

// start runs argv with extra environment, its output collected.
func start(t testing.TB, env []string, argv ...string) *proc {
	t.Helper()
	p, read := startUnread(t, env, argv...)
	read()
	return p
}

// gate is a reader that blocks until opened.
type gate struct {
	r    io.Reader
	open chan struct{}
}

func (g gate) Read(b []byte) (int, error) {
	<-g.open
	return g.r.Read(b)
}

// startUnread runs argv like start, but its output goes into a pipe that
// nothing reads (so that it fills) until read is called. Cleanup calls
// read.
func startUnread(t testing.TB, env []string, argv ...string) (p *proc, read func()) {
	t.Helper()
	return startFiles(t, nil, env, argv...)
}

// startFiles runs argv like startUnread, with files open at descriptors
// 3, 4, ...
func startFiles(t testing.TB, files []*os.File, env []string, argv ...string) (p *proc, read func()) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = repoRoot
	// Every process here is spared the race runtime's sleep at exit (env
	// may say otherwise).
	cmd.Env = append(append(os.Environ(), noRaceExitSleep), env...)
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	p = &proc{t: t, cmd: cmd, exited: make(chan struct{}), seen: map[int]bool{}, outPipe: pr}
	open := make(chan struct{})
	var once sync.Once
	read = func() { once.Do(func() { close(open) }) }
	p.out = newLogLines(t, filepath.Base(argv[0]), gate{r: pr, open: open})
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		read()
		p.stop()
		select {
		case <-p.out.done:
		case <-time.After(30 * time.Second):
			// Something p started still holds its output pipe.
			t.Errorf("output of %s still open 30s after it was stopped", strings.Join(argv, " "))
		}
		pr.Close()
		if t.Failed() {
			t.Logf("output of %s:\n%s", strings.Join(argv, " "), p.out)
		}
		p.checkNoDescendants()
	})
	return p, read
}

// stop ends the process and its group if it is still running, and the
// batons that took over from it by self-upgrade, which stay in its process
// group (docs/architecture.md, "Self-upgrade").
func (p *proc) stop() {
	p.descendants() // remember the tree before it goes
	select {
	case <-p.exited:
	default:
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			p.t.Errorf("%s did not exit on SIGTERM; killing it", p.cmd.Path)
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	}
	// Once p has exited its group id stays taken while a member lives, so
	// the members found here are p's: successors not followed yet (a test
	// that failed during an upgrade) are followed now, to be ended and
	// reaped like the others.
	for _, pid := range groupMembers(p.cmd.Process.Pid) {
		p.follow(pid)
	}
	p.succMu.Lock()
	succ := slices.Clone(p.successors)
	p.succMu.Unlock()
	for _, s := range succ {
		s.signal(syscall.SIGTERM)
	}
	for _, s := range succ {
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			p.t.Errorf("baton %d (successor of %s) did not exit on SIGTERM; killing it", s.pid, p.cmd.Path)
			s.signal(syscall.SIGKILL)
			<-s.exited
		}
	}
}

// waitExit waits for the process to exit and returns its exit code.
func (p *proc) waitExit(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		p.t.Fatalf("%s still running after %s", p.cmd.Path, d)
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	p.t.Fatalf("wait: %v", p.err)
	return -1
}

// descendants returns the live processes below p, and remembers them so
// Cleanup can check they are gone.
func (p *proc) descendants() []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := ppid(pid); pp > 0 {
			children[pp] = append(children[pp], pid)
		}
	}
	var out []int
	queue := []int{p.cmd.Process.Pid}
	p.succMu.Lock()
	for _, s := range p.successors {
		select {
		case <-s.exited:
		default:
			out = append(out, s.pid)
			queue = append(queue, s.pid)
		}
	}
	p.succMu.Unlock()
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	p.seenMu.Lock()
	for _, pid := range out {
		p.seen[pid] = true
	}
	p.seenMu.Unlock()
	return out
}

// checkNoDescendants fails the test if a process once seen below p is
// still alive (bounded wait: the kernel's parent-death signal is
// asynchronous). Zombies count as gone only once reaped.
func (p *proc) checkNoDescendants() {
	p.seenMu.Lock()
	defer p.seenMu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for pid := range p.seen {
		for processExists(pid) {
			// Orphaned to this process (a child subreaper, see
			// childSubreaper) and dead: nobody else will reap it.
			if procState(pid) == "Z" && ppid(pid) == os.Getpid() {
				p.t.Errorf("process %d (%s) started under %s outlived its parent and was left to the test to reap", pid, comm(pid), filepath.Base(p.cmd.Path))
				var ws syscall.WaitStatus
				syscall.Wait4(pid, &ws, 0, nil)
				break
			}
			if time.Now().After(deadline) {
				p.t.Errorf("process %d (%s, state %s, parent %d) started under %s is still there", pid, comm(pid), procState(pid), ppid(pid), filepath.Base(p.cmd.Path))
				syscall.Kill(pid, syscall.SIGKILL)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// successor is a baton that took over from a proc by self-upgrade: the
// previous baton started it and then exited (docs/architecture.md, "Self-upgrade"), so the test
// did not start it and os/exec cannot wait for it. A pidfd pins it (a
// signal never reaches a recycled pid) and tells when it exits. Once its
// predecessor has exited it is this process's child (see childSubreaper),
// and it is reaped here.
type successor struct {
	pid    int
	start  string // its start time in /proc/PID/stat, to tell it from a recycled pid
	exited chan struct{}
	how    string // how it ended, "exit status 0" or "signal: killed"; set before exited is closed

	mu sync.Mutex
	fd int // the pidfd; -1 once it exited
}

// follow makes pid, a baton that took over from p (or from one of its
// successors), part of p: p's descendants include its tree, stop ends it,
// and exitOf reports how it ended. Following a pid twice is a no-op.
func (p *proc) follow(pid int) {
	p.t.Helper()
	p.succMu.Lock()
	defer p.succMu.Unlock()
	if pid == p.cmd.Process.Pid {
		return
	}
	for _, s := range p.successors {
		if s.pid == pid {
			return
		}
	}
	s := &successor{pid: pid, start: startTime(pid), exited: make(chan struct{}), fd: -1}
	p.successors = append(p.successors, s)
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		s.how = "gone before it was followed"
		close(s.exited)
		if !errors.Is(err, unix.ESRCH) {
			p.t.Errorf("follow baton %d: %v", pid, os.NewSyscallError("pidfd_open", err))
		}
		return
	}
	s.fd = fd
	go s.wait() // ends when the process has exited: stop ends them all
}

// wait waits for the successor to exit and reaps it if it is this
// process's child by then; if not, its parent (a baton) does.
func (s *successor) wait() {
	defer close(s.exited)
	for {
		// A bounded poll, in case the wake-up races with the exit.
		fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(fds, 100); n > 0 && fds[0].Revents != 0 {
			break
		}
	}
	s.mu.Lock()
	unix.Close(s.fd)
	s.fd = -1
	s.mu.Unlock()
	s.how = "reaped by its parent"
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(s.pid, &ws, unix.WNOHANG, nil)
		switch {
		case err == nil && got == s.pid:
			s.how = describeWait(ws)
			return
		case err == nil:
			// Our child, not quite a zombie yet.
		case !processExists(s.pid) || startTime(s.pid) != s.start || time.Now().After(deadline):
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// signal sends sig to the successor if it has not exited.
func (s *successor) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd >= 0 {
		unix.PidfdSendSignal(s.fd, sig, nil, 0)
	}
}

func describeWait(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "signal: " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

// exitOf waits up to d for pid, p itself or a successor it follows, to
// exit, and returns how it ended ("exit status 0", "signal: killed").
func (p *proc) exitOf(pid int, d time.Duration) string {
	p.t.Helper()
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	if pid == p.cmd.Process.Pid {
		select {
		case <-p.exited:
		case <-timeout.C:
			p.t.Fatalf("%s (pid %d) still running after %s", p.cmd.Path, pid, d)
		}
		if p.err == nil {
			return "exit status 0"
		}
		return p.err.Error()
	}
	p.succMu.Lock()
	var s *successor
	for _, c := range p.successors {
		if c.pid == pid {
			s = c
		}
	}
	p.succMu.Unlock()
	if s == nil {
		p.t.Fatalf("baton %d is not followed", pid)
	}
	select {
	case <-s.exited:
	case <-timeout.C:
		p.t.Fatalf("baton %d (state %s) still running after %s", pid, procState(pid), d)
	}
	return s.how
}

// groupMembers returns the processes in process group pgid, but zombies
// that another process will reap.
func groupMembers(pgid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(pid)
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && (f[0] != "Z" || f[1] == strconv.Itoa(os.Getpid())) {
			out = append(out, pid)
		}
	}
	return out
}

// childSubreaper makes this test process a child subreaper until t ends:
// a baton started by a self-upgrade is re-parented to it when the baton
// that started it exits, rather than to the host's PID 1, so the test can
// reap it and learn how it ended (successor). Call it before starting the
// baton, so that it ends after the baton's cleanup.
func childSubreaper(t testing.TB) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(os.NewSyscallError("prctl PR_SET_CHILD_SUBREAPER", err))
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

// statFields returns the fields of /proc/PID/stat after the command name:
// state, ppid, pgrp, ...
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// startTime returns the process's start time (clock ticks after boot), ""
// if it is gone.
func startTime(pid int) string {
	if f := statFields(pid); len(f) > 19 {
		return f[19]
	}
	return ""
}

func processExists(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

func comm(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}

func ppid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

func openFDs(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

var (
	reAllReady    = regexp.MustCompile(`msg="all workers ready"`)
	reWorkerReady = regexp.MustCompile(`msg="worker ready" slot=(\d+) pid=(\d+)`)
)

// reLogTime is the time at the start of a line of baton's log.
var reLogTime = regexp.MustCompile(`^time=(\S+) `)

// logTime returns the time a line of baton's log was written, by baton's
// clock: what baton did when, however late the test reads it.
func logTime(t testing.TB, line string) time.Time {
	t.Helper()
	m := reLogTime.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no time in baton's log line %q", line)
	}
	at, err := time.Parse(time.RFC3339Nano, m[1])
	if err != nil {
		t.Fatalf("log line %q: %v", line, err)
	}
	return at
}

// baton is a running baton with its listener address.
type baton struct {
	*proc
	addr string
}

// startBaton runs `baton run --listen http=tcp://127.0.0.1:PORT args...`
// and waits for all workers to be ready.
func startBaton(t testing.TB, args ...string) *baton {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	argv := append([]string{bin.baton, "run", "--listen", "http=tcp://" + addr}, args...)
	p := start(t, nil, argv...)
	p.out.wait(reAllReady, 30*time.Second)
	return &baton{proc: p, addr: addr}
}

// workerPIDs returns the pids of the workers currently ready, by slot,
// from the log (the last "worker ready" line of each slot).
func (b *baton) workerPIDs() map[int]int {
	pids := map[int]int{}
	b.out.mu.Lock()
	defer b.out.mu.Unlock()
	for _, l := range b.out.lines {
		if m := reWorkerReady.FindStringSubmatch(l); m != nil {
			slot, _ := strconv.Atoi(m[1])
			pid, _ := strconv.Atoi(m[2])
			pids[slot] = pid
		}
	}
	return pids
}

func withTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
