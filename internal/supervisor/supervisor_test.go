package supervisor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/spawn"
	"github.com/batonhq/baton/internal/systemd"
)

// harness runs a supervisor with test workers on a socket the test passes
// in as if systemd had.
type harness struct {
	t      *testing.T
	addr   string
	cancel context.CancelFunc
	done   chan error
	notes  chan string
	sigs   chan os.Signal
	out    *syncBuffer
	dir    string // the runtime directory, holding the notify socket

	cfgMu   sync.Mutex
	nextCfg *config.Config // what a reload loads
	loadErr error
}

// setConfig makes the next reload load cfg (or fail with err).
func (h *harness) setConfig(cfg *config.Config, err error) {
	h.cfgMu.Lock()
	defer h.cfgMu.Unlock()
	h.nextCfg, h.loadErr = cfg, err
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testConfig(mode string, count int, mutate func(*config.Config)) *config.Config {
	self, _ := os.Executable()
	c := &config.Config{
		Listen: []config.Listener{{Name: "http", Address: "tcp://127.0.0.1:1"}},
		Worker: config.Worker{Command: []string{self, "worker", mode}, Count: count, Env: map[string]string{"REV": "0"}},
	}
	// A race-built test worker may take over 10s to start on a loaded
	// machine: the default, unless a test is about the timeout.
	c.Reload.Timeout = config.Duration(config.DefaultReloadTimeout)
	c.Worker.DrainTimeout = config.Duration(5 * time.Second)
	if mutate != nil {
		mutate(c)
	}
	if err := c.Validate(); err != nil {
		panic(err)
	}
	return c
}

// startHarness passes a fresh 127.0.0.1:0 socket as the inherited "http"
// and runs the supervisor in the background.
func startHarness(t *testing.T, cfg *config.Config) *harness {
	t.Helper()
	return startHarnessWith(t, cfg, nil)
}

// startHarnessWith is startHarness with Options changed by mutate.
func startHarnessWith(t *testing.T, cfg *config.Config, mutate func(*harness, *Options)) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fd, err := spawn.DupFd(ln.(*net.TCPListener))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	unix.SetNonblock(fd, false)

	self, _ := os.Executable()
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, addr: addr, cancel: cancel, done: make(chan error, 1),
		notes: make(chan string, 1000), sigs: make(chan os.Signal, 200), out: &syncBuffer{}, dir: t.TempDir(), nextCfg: cfg}
	opts := Options{
		Logger:     slog.New(slog.NewTextHandler(io.MultiWriter(h.out, tlogWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Signals:    h.sigs,
		Shim:       []string{self, spawn.ShimCommand, "--"},
		Output:     io.MultiWriter(h.out, tlogWriter{t}),
		Notify:     func(s string) error { h.notes <- s; return nil },
		RuntimeDir: h.dir,
		Inherited:  []systemd.Socket{{Name: "http", Fd: fd}},
		Load: func() (*config.Config, error) {
			h.cfgMu.Lock()
			defer h.cfgMu.Unlock()
			return h.nextCfg, h.loadErr
		},
	}
	if mutate != nil {
		mutate(h, &opts)
	}
	go func() { h.done <- Run(ctx, cfg, opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(20 * time.Second):
			t.Error("supervisor did not stop")
		}
	})
	return h
}

// waitNote waits for a message to systemd that starts with prefix.
func (h *harness) waitNote(prefix string) string {
	h.t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case n := <-h.notes:
			if strings.HasPrefix(n, prefix) {
				return n
			}
		case err := <-h.done:
			h.t.Fatalf("supervisor ended while waiting for %q: %v", prefix, err)
		case <-timeout:
			h.t.Fatalf("no %q sent to systemd", prefix)
		}
	}
}

// waitLog waits for a line of the supervisor's log matching re and
// returns its submatches.
func (h *harness) waitLog(re *regexp.Regexp) []string {
	h.t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if m := re.FindStringSubmatch(h.out.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no log line matching %q", re)
		}
	}
}

func (h *harness) wait() error {
	h.t.Helper()
	return h.waitFor(20 * time.Second)
}

// waitFor waits up to d for the supervisor to end and returns its error.
func (h *harness) waitFor(d time.Duration) error {
	h.t.Helper()
	select {
	case err := <-h.done:
		h.done <- err
		return err
	case <-time.After(d):
		h.t.Fatalf("supervisor did not end within %s", d)
		return nil
	}
}

// pidsOf collects the worker pids seen in answers until want distinct
// ones were seen (bounded).
func (h *harness) pids(want int) map[int]bool {
	h.t.Helper()
	seen := map[int]bool{}
	for i := 0; i < 500 && len(seen) < want; i++ {
		f := strings.Fields(get(h.t, h.addr))
		pid, _ := strconv.Atoi(f[1])
		seen[pid] = true
	}
	return seen
}

func alive(pid int) bool { return unix.Kill(pid, 0) == nil }

func TestWorkersGetListenersAndStopCleanly(t *testing.T) {
	h := startHarness(t, testConfig("serve", 2, nil))
	if n := h.waitNote("READY=1"); !strings.Contains(n, "STATUS=2/2 workers ready") {
		t.Errorf("ready message = %q, want it to carry the status line", n)
	}
	body := get(t, h.addr)
	f := strings.Fields(body)
	// "pid N listen_pid M names X fds Y slot Z blocking B rev R gen G"
	if len(f) != 16 || f[1] != f[3] || f[5] != "http" || f[7] != "1" {
		t.Fatalf("worker saw %q: want LISTEN_PID equal to its pid, LISTEN_FDNAMES=http, LISTEN_FDS=1", body)
	}
	pids := h.pids(2)
	if len(pids) != 2 {
		t.Fatalf("saw workers %v, want 2 distinct", pids)
	}
	h.cancel()
	if err := h.wait(); err != nil {
		t.Fatalf("Run = %v, want nil after a clean stop", err)
	}
	for pid := range pids {
		if alive(pid) {
			t.Errorf("worker %d still alive after Run returned", pid)
		}
	}
	if !strings.Contains(h.out.String(), "serving") || !strings.Contains(h.out.String(), "[worker ") {
		t.Errorf("worker output was not forwarded with a prefix:\n%s", h.out.String())
	}
}

// baton binds its own sockets blocking, as systemd passes them, so that a
// worker with a plain blocking accept works; it never changes the mode
// afterwards (the Go test worker flips it when it starts, so the first
// worker of a fresh socket is the one that can tell).
func TestSelfBoundSocketIsHandedOverBlocking(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := testConfig("serve", 1, func(c *config.Config) { c.Listen[0].Address = "tcp://" + addr })
	runUntilReady(t, cfg, []systemd.Socket{})
	if body := get(t, addr); !strings.Contains(body, "blocking true") {
		t.Errorf("worker saw %q: want the socket blocking", body)
	}
}

func TestNeverReadyFailsNamingTheWorker(t *testing.T) {
	start := time.Now()
	h := startHarness(t, testConfig("silent", 2, func(c *config.Config) {
		c.Reload.Timeout = config.Duration(time.Second)
	}))
	err := h.wait()
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "did not become ready within 1s") ||
		!strings.Contains(err.Error(), "worker 0 (pid ") {
		t.Fatalf("Run = %v, want ErrNotReady naming worker 0 and the timeout", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("took %s to give up, want about the 1s timeout plus the drain", d)
	}
}

// READY=1 from a process that is not a worker (here the test itself) is
// dropped: it must not make the silent workers count as ready.
func TestNotifyFromStrangerIsDropped(t *testing.T) {
	h := startHarness(t, testConfig("silent", 1, func(c *config.Config) {
		c.Reload.Timeout = config.Duration(2 * time.Second)
	}))
	path := waitNotifySocket(t, h)
	c, err := net.Dial("unixgram", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1")); err != nil {
		t.Fatal(err)
	}
	if err := h.wait(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Run = %v, want ErrNotReady: a stranger's READY=1 was taken", err)
	}
}

// waitNotifySocket waits for the supervisor's notify socket and returns
// its path.
func waitNotifySocket(t *testing.T, h *harness) string {
	t.Helper()
	path := filepath.Join(h.dir, "notify-"+strconv.Itoa(os.Getpid())+".sock")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return path
		}
		if time.Now().After(deadline) {
			t.Fatalf("notify socket %s never appeared", path)
		}
	}
}

func TestDelayReadiness(t *testing.T) {
	h := startHarness(t, testConfig("silent", 1, func(c *config.Config) { c.Worker.Ready = "delay:200ms" }))
	h.waitNote("READY=1")
}

func TestKilledWorkerIsReplaced(t *testing.T) {
	h := startHarness(t, testConfig("serve", 2, nil))
	h.waitNote("READY=1")
	old := h.pids(2)
	var victim int
	for pid := range old {
		victim = pid
		break
	}
	if err := unix.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.waitNote("STATUS=1/2 workers ready, generation 1, 1 restarts")
	h.waitNote("STATUS=2/2 workers ready, generation 1, 1 restarts")
	now := h.pids(2)
	if now[victim] {
		t.Fatalf("killed worker %d still answers", victim)
	}
	if len(now) != 2 {
		t.Fatalf("after the replacement saw %v, want 2 workers", now)
	}
}

func TestStoppingStartsReplacementFirst(t *testing.T) {
	h := startHarness(t, testConfig("stopping", 1, nil))
	h.waitNote("READY=1")
	first := strings.Fields(get(t, h.addr))[1] // this request makes the worker leave
	h.waitNote("STATUS=0/1 workers ready, generation 1, 1 restarts")
	h.waitNote("STATUS=1/1 workers ready, generation 1, 1 restarts")
	second := strings.Fields(get(t, h.addr))[1]
	if first == second {
		t.Fatalf("same worker %s answered after it said STOPPING=1", first)
	}
}

// A STOPPING=1 from a process the worker started is credited to the
// worker, which itself keeps serving: once its replacement is ready it
// gets SIGTERM and drains, rather than serve until drain_timeout kills it
// mid-request.
func TestStoppingFromChildDrainsWorker(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "stopped-once")
	h := startHarness(t, testConfig("child-stopping", 1, func(c *config.Config) {
		c.Worker.Env["STOP_ONCE"] = marker
	}))
	h.waitNote("READY=1")
	first := strconv.Itoa(h.readyPIDs(1)[0])
	h.waitLog(regexp.MustCompile(`msg="worker is leaving, starting its replacement" slot=0 pid=` + first + ` `))
	m := h.waitLog(regexp.MustCompile(`msg="worker exited" slot=0 pid=` + first + ` generation=1 how="([^"]+)"`))
	if m[1] != "exit status 0" {
		t.Errorf("the leaving worker ended with %q, want exit status 0 (drained on SIGTERM)", m[1])
	}
	if strings.Contains(h.out.String(), "did not finish draining in time") {
		t.Errorf("the leaving worker was killed at its drain deadline")
	}
	if got := h.serving(1); len(got) != 1 {
		t.Errorf("after the replacement, serving %v", got)
	}
}

// A worker's last message, sent just before it exits, is taken before its
// exit: STOPPING=1 then exit 1 is a worker leaving (its replacement
// starts at once), never a crash, however the notify reader and the
// reaper are scheduled.
func TestLastMessageBeforeExitIsTakenFirst(t *testing.T) {
	const leaves = 60
	serving := filepath.Join(t.TempDir(), "serving")
	h := startHarness(t, testConfig("stop-exit", 4, func(c *config.Config) {
		// However long the leaves take, the budget is spent by the 60th.
		c.Restart.Limit, c.Restart.Window = leaves, config.Duration(time.Hour)
		c.Worker.Env["SERVING"] = serving
	}))
	h.waitNote("READY=1")
	if err := os.WriteFile(serving, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// 60 starts of a race-built worker, a few seconds each on a loaded
	// machine.
	if err := h.waitFor(5 * time.Minute); !errors.Is(err, ErrGiveUp) {
		t.Fatalf("Run = %v, want ErrGiveUp once %d workers left", err, leaves)
	}
	// Every worker says STOPPING=1 before it exits: none may be taken
	// for a crash.
	out := h.out.String()
	if n := strings.Count(out, `msg="worker is leaving, starting its replacement"`); n != leaves {
		t.Errorf("%d workers were taken as leaving, want all %d the budget allowed", n, leaves)
	}
	for _, m := range regexp.MustCompile(`msg="worker exited unexpectedly, replacing it" .*`).FindAllString(out, -1) {
		t.Errorf("a worker that said STOPPING=1 was taken for a crash: %s", m)
	}
}

func TestSecondSignalKills(t *testing.T) {
	h := startHarness(t, testConfig("stubborn", 2, func(c *config.Config) {
		c.Worker.DrainTimeout = config.Duration(time.Minute)
	}))
	h.waitNote("READY=1")
	pids := h.pids(2)
	h.sigs <- syscall.SIGTERM
	h.waitNote("STOPPING=1")
	// The drain may outlast TimeoutStopSec=: systemd is asked to wait for
	// drain_timeout plus a margin.
	h.waitNote("EXTEND_TIMEOUT_USEC=65000000")
	for pid := range pids {
		if !alive(pid) {
			t.Fatalf("worker %d ignoring SIGTERM is gone after the first signal", pid)
		}
	}
	start := time.Now()
	h.sigs <- syscall.SIGTERM
	if err := h.wait(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("second signal took %s to end the run, want it at once", d)
	}
}

func TestDrainTimeoutKillsStubbornWorkers(t *testing.T) {
	h := startHarness(t, testConfig("stubborn", 2, func(c *config.Config) {
		c.Worker.DrainTimeout = config.Duration(500 * time.Millisecond)
	}))
	h.waitNote("READY=1")
	pids := h.pids(2)
	start := time.Now()
	h.cancel()
	if err := h.wait(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("stubborn workers were gone after %s, before the drain timeout", d)
	}
	for pid := range pids {
		if alive(pid) {
			t.Errorf("worker %d survived the drain timeout", pid)
		}
	}
}

func TestUnclaimedInheritedSocketIsAnError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fd, _ := spawn.DupFd(ln.(*net.TCPListener))
	cfg := testConfig("serve", 1, func(c *config.Config) {
		c.Listen[0].Address = "tcp://127.0.0.1:0"
	})
	err = Run(context.Background(), cfg, Options{
		Logger:     slog.New(slog.NewTextHandler(tlogWriter{t}, nil)),
		RuntimeDir: t.TempDir(),
		Notify:     func(string) error { return nil },
		Inherited:  []systemd.Socket{{Name: "admin", Fd: fd}},
	})
	if err == nil || !strings.Contains(err.Error(), `systemd passed socket "admin" that no listener claims`) {
		t.Fatalf("Run = %v, want the unclaimed socket named", err)
	}
}

// Two sockets systemd passed under one name: only one could be served, so
// baton refuses to start.
func TestDuplicateInheritedNamesAreAnError(t *testing.T) {
	var socks []systemd.Socket
	for i := 0; i < 2; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		fd, _ := spawn.DupFd(ln.(*net.TCPListener))
		socks = append(socks, systemd.Socket{Name: "http", Fd: fd})
	}
	err := Run(context.Background(), testConfig("serve", 1, nil), Options{
		Logger:     slog.New(slog.NewTextHandler(tlogWriter{t}, nil)),
		RuntimeDir: t.TempDir(),
		Notify:     func(string) error { return nil },
		Inherited:  socks,
	})
	if err == nil || !strings.Contains(err.Error(), `systemd passed several sockets named "http"`) {
		t.Fatalf("Run = %v, want the duplicate name refused", err)
	}
}

// The runtime directory is systemd's RUNTIME_DIRECTORY (never removed by
// baton), else a new private directory under a name nobody could have
// made first: two batons with one pid never share it, and a base that
// another user may write to is not used.
func TestRuntimeDir(t *testing.T) {
	log := slog.New(slog.NewTextHandler(tlogWriter{t}, nil))
	systemdDir := t.TempDir()
	t.Setenv("RUNTIME_DIRECTORY", systemdDir+":/elsewhere")
	d, err := openRuntimeDir("", log)
	if err != nil || d.path != systemdDir || d.created {
		t.Fatalf("with RUNTIME_DIRECTORY: %+v, %v; want %s, not created by baton", d, err, systemdDir)
	}
	d.remove()
	if _, err := os.Stat(systemdDir); err != nil {
		t.Errorf("baton removed systemd's RUNTIME_DIRECTORY: %v", err)
	}

	t.Setenv("RUNTIME_DIRECTORY", "")
	tmp := t.TempDir()
	os.Chmod(tmp, 0o1777)
	t.Setenv("TMPDIR", tmp)
	t.Setenv("XDG_RUNTIME_DIR", "")
	// A base another user may write to (or a symlink) is not used.
	open := filepath.Join(t.TempDir(), "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(t.TempDir(), link)
	bases := []string{open, link}
	if os.Geteuid() != 0 {
		bases = nil // only root's base is /run/baton
	}
	defer func(old string) { rootRuntimeBase = old }(rootRuntimeBase)
	for _, base := range bases {
		rootRuntimeBase = base
		a, err := openRuntimeDir("", log)
		if err != nil {
			t.Fatal(err)
		}
		b, err := openRuntimeDir("", log)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []runtimeDir{a, b} {
			fi, err := os.Lstat(d.path)
			if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 || filepath.Dir(d.path) != tmp || !d.created {
				t.Errorf("base %s: runtime dir %+v (%v, %v); want a new 0700 directory in TMPDIR %s", base, d, fi.Mode(), err, tmp)
			}
		}
		if a.path == b.path {
			t.Errorf("two runtime directories share the path %s", a.path)
		}
		// Removing it never removes what someone else put there.
		os.WriteFile(filepath.Join(a.path, "theirs"), nil, 0o600)
		a.remove()
		b.remove()
		if _, err := os.Stat(filepath.Join(a.path, "theirs")); err != nil {
			t.Errorf("remove deleted a file baton did not create: %v", err)
		}
		if _, err := os.Stat(b.path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("an empty runtime directory baton created is still there: %v", err)
		}
	}
}

// A runtime directory too deep for a unix socket's path is refused saying
// so, not with bind's "invalid argument".
func TestRuntimeDirTooLong(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	err := Run(context.Background(), testConfig("serve", 1, nil), Options{
		Logger:     slog.New(slog.NewTextHandler(tlogWriter{t}, nil)),
		RuntimeDir: dir,
		Notify:     func(string) error { return nil },
		Inherited:  []systemd.Socket{},
	})
	if err == nil || !strings.Contains(err.Error(), "more than the 107 a unix socket path may have") || strings.Contains(err.Error(), "invalid argument") {
		t.Fatalf("Run = %v, want the path named as too long", err)
	}
}

// With WatchdogSec= (WATCHDOG_USEC) baton pings systemd from its loop at
// half the interval.
func TestPingsSystemdWatchdog(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	h := startHarness(t, testConfig("serve", 1, nil))
	start := time.Now()
	for pings := 0; pings < 5; {
		if n := h.waitNote("WATCHDOG=1"); n == "WATCHDOG=1" {
			pings++
		}
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("5 pings took %s, want about 4 × 100ms", d)
	}
}

// runAlone runs the supervisor for cfg, with no socket from systemd,
// until it returns: a failed start, or the end of ctx. Its log and the
// workers' output go to t.
func runAlone(ctx context.Context, t *testing.T, cfg *config.Config) error {
	self, _ := os.Executable()
	return Run(ctx, cfg, Options{
		Logger:     slog.New(slog.NewTextHandler(tlogWriter{t}, nil)),
		Shim:       []string{self, spawn.ShimCommand, "--"},
		Output:     tlogWriter{t},
		RuntimeDir: t.TempDir(),
		Notify:     func(string) error { return nil },
		Inherited:  []systemd.Socket{},
	})
}

// runUntilReady runs the supervisor on cfg with the given sockets as if
// from systemd, waits for READY=1, and stops it (expecting a clean stop)
// when the test ends.
func runUntilReady(t *testing.T, cfg *config.Config, inherited []systemd.Socket) {
	t.Helper()
	runUntilReadyIn(t, cfg, inherited, t.TempDir(), nil)
}

// runUntilReadyIn is runUntilReady with the runtime directory dir; baton's
// log also goes to log, if not nil.
func runUntilReadyIn(t *testing.T, cfg *config.Config, inherited []systemd.Socket, dir string, log io.Writer) {
	t.Helper()
	var logTo io.Writer = tlogWriter{t}
	if log != nil {
		logTo = io.MultiWriter(logTo, log)
	}
	self, _ := os.Executable()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	notes := make(chan string, 10)
	go func() {
		done <- Run(ctx, cfg, Options{
			Logger:     slog.New(slog.NewTextHandler(logTo, nil)),
			Shim:       []string{self, spawn.ShimCommand, "--"},
			Output:     tlogWriter{t},
			Notify:     func(s string) error { notes <- s; return nil },
			RuntimeDir: dir,
			Inherited:  inherited,
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	timeout := time.After(time.Minute)
	for {
		select {
		case n := <-notes:
			if strings.HasPrefix(n, "READY=1") {
				return
			}
		case err := <-done:
			done <- err
			t.Fatalf("Run ended before READY=1: %v", err)
		case <-timeout:
			t.Fatal("no READY=1")
		}
	}
}
