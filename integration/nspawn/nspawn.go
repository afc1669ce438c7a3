package nspawn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for the bounds of Boot, Shutdown and the commands run inside.
// A zero Options field, or a context without a deadline, means the default.
const (
	DefaultBootTimeout     = 60 * time.Second // from starting nspawn to "running"
	DefaultShutdownTimeout = 30 * time.Second // for poweroff, before killing
	DefaultCommandTimeout  = 60 * time.Second // for Run and WriteFile
	DefaultWaitTimeout     = 30 * time.Second // for WaitActive
)

const (
	pollInterval  = 50 * time.Millisecond
	retryInterval = 100 * time.Millisecond
	killWait      = 5 * time.Second // after each SIGKILL
	runDir        = "/run/systemd/nspawn"
	systemdPath   = "/usr/lib/systemd/systemd"
	consoleTail   = 2048
)

// The container's /etc starts empty, so its first boot enables every unit
// of the host's packages that the distribution's presets do not name
// (Debian enables all by default): an nginx installed on the host would
// start, and fail, inside. This preset, read before the host's, disables
// them all, so that only the units a test starts run. Units enabled in
// /usr itself (journald and the other parts of systemd) are not affected.
const (
	presetDir  = "/etc/systemd/system-preset"
	presetName = "00-baton-nspawn.preset"
	presetText = "# Only what a test starts runs (integration/nspawn).\ndisable *\n"
)

// minimalEnv is the only environment the commands started here get: the
// caller's NOTIFY_SOCKET, LISTEN_* or SYSTEMD_* must not reach systemd-nspawn
// or the container.
const minimalEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// startScript moves the shell into the machine's cgroup ($2.., $1 files),
// then execs systemd-nspawn in its place (same pid, same parent-death
// signal).
const startScript = `n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done
exec "$@"`

// Options configure Boot.
type Options struct {
	// Name is the machine (and host) name; default "baton-it-<pid>-<n>",
	// unique in this process. At most 64 letters, digits, '-', '_', '.'.
	Name string
	// Binds maps host directories to paths in the container, read-only.
	Binds map[string]string
	// Log receives progress (boot and shutdown timings, escalations), e.g.
	// t.Logf. Nil discards it.
	Log func(format string, args ...any)
	// BootTimeout bounds Boot; zero means DefaultBootTimeout.
	BootTimeout time.Duration
	// ShutdownTimeout bounds the clean poweroff in Shutdown, before it
	// kills; zero means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
}

// Machine is a booted container. Its methods may be called concurrently.
type Machine struct {
	// Name is the machine name.
	Name string
	// Leader is the host pid of the container's PID 1 (systemd).
	Leader int

	leader          proc
	cmd             *exec.Cmd
	exited          chan struct{} // closed once systemd-nspawn has been reaped
	waitErr         error         // cmd.Wait's result, set before exited is closed
	dir             string        // temporary directory holding the console log
	cg              *cgroup
	logf            func(format string, args ...any)
	shutdownTimeout time.Duration

	stopping atomic.Bool // Run refuses once Shutdown has begun

	mu       sync.Mutex
	shut     bool
	shutErr  error
	console  string // the console log, saved when its file is removed
	consoled bool
}

var seq atomic.Int64

// Available reports whether Boot can work here: nil when running as root
// with systemd-nspawn, nsenter and systemd installed; otherwise an error
// naming what is missing, for a test to skip with.
func Available() error {
	var missing []string
	if uid := os.Geteuid(); uid != 0 {
		missing = append(missing, "root (running as uid "+strconv.Itoa(uid)+")")
	}
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		missing = append(missing, "systemd-nspawn (Debian package systemd-container: run integration/nspawn/install.sh)")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		missing = append(missing, "nsenter (Debian package util-linux)")
	}
	if _, err := os.Stat(systemdPath); err != nil {
		missing = append(missing, systemdPath+" (Debian package systemd)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("nspawn: unavailable: needs %s", strings.Join(missing, ", "))
	}
	return nil
}

// Boot starts a container running the host's systemd and returns once
// `systemctl is-system-running` inside says running or degraded (degraded
// is logged with the failed units). The wait is bounded by ctx and by
// Options.BootTimeout. On error nothing is left running. The caller must
// call Shutdown, typically from t.Cleanup.
func Boot(ctx context.Context, o Options) (*Machine, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	name := o.Name
	if name == "" {
		name = fmt.Sprintf("baton-it-%d-%d", os.Getpid(), seq.Add(1))
	}
	if !validName(name) {
		return nil, fmt.Errorf("nspawn: machine name %q: want 1 to 64 letters, digits, '-', '_' or '.'", name)
	}
	binds, err := bindArgs(o.Binds)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(o.BootTimeout, DefaultBootTimeout))
	defer cancel()
	if err := ensureRunTmpfs(); err != nil {
		return nil, err
	}
	nspawnPath, err := exec.LookPath("systemd-nspawn")
	if err != nil {
		return nil, fmt.Errorf("nspawn: %w", err)
	}

	m := &Machine{
		Name:            name,
		exited:          make(chan struct{}),
		logf:            o.Log,
		shutdownTimeout: orDefault(o.ShutdownTimeout, DefaultShutdownTimeout),
	}
	if m.logf == nil {
		m.logf = func(string, ...any) {}
	}
	if m.dir, err = os.MkdirTemp("", "baton-nspawn-"); err != nil {
		return nil, fmt.Errorf("nspawn: %w", err)
	}
	console, err := os.Create(filepath.Join(m.dir, "console.log"))
	if err != nil {
		os.RemoveAll(m.dir)
		return nil, fmt.Errorf("nspawn: %w", err)
	}
	if m.cg, err = newCgroup(name); err != nil {
		console.Close()
		os.RemoveAll(m.dir)
		return nil, err
	}
	preset := filepath.Join(m.dir, presetName)
	if err := os.WriteFile(preset, []byte(presetText), 0o644); err != nil {
		console.Close()
		m.cg.remove()
		os.RemoveAll(m.dir)
		return nil, fmt.Errorf("nspawn: %w", err)
	}

	procs := m.cg.procsFiles()
	args := append([]string{"-c", startScript, "sh", strconv.Itoa(len(procs))}, procs...)
	args = append(args, nspawnPath,
		"--keep-unit", "--register=no", // no system bus outside
		"--directory=/", "--volatile=yes", // the host's /usr, read-only, on a tmpfs root
		"--boot", "--machine="+name, "--console=pipe")
	args = append(args, binds...)
	args = append(args, "--bind-ro="+preset+":"+presetDir+"/"+presetName)
	// Kernel command line for the container's systemd: after the options.
	args = append(args, "systemd.mask=systemd-firstboot.service")
	m.cmd = exec.Command("/bin/sh", args...)
	m.cmd.Env = []string{minimalEnv}
	// A file, not a pipe: nspawn must not die of SIGPIPE if the test dies.
	m.cmd.Stdout, m.cmd.Stderr = console, console
	// If the test binary dies without Shutdown, nspawn gets SIGTERM, on
	// which it halts the container.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}

	start := time.Now()
	err = m.start()
	console.Close()
	if err != nil {
		m.cg.remove()
		os.RemoveAll(m.dir)
		return nil, fmt.Errorf("nspawn: start systemd-nspawn: %w", err)
	}
	state, err := m.boot(ctx)
	if err != nil {
		tail := m.consoleTail()
		serr := m.abort()
		return nil, errors.Join(fmt.Errorf("nspawn: boot %s: %w%s", name, err, tail), serr)
	}
	m.logf("nspawn: %s: %s in %v (leader pid %d)", name, state, time.Since(start).Round(time.Millisecond), m.Leader)
	return m, nil
}

// start starts systemd-nspawn and a goroutine that waits for it.
func (m *Machine) start() error {
	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the thread that forked nspawn
		// exits, not the process. Locked, this thread ends only with this
		// goroutine, and that is after nspawn has exited.
		runtime.LockOSThread()
		if err := m.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		m.waitErr = m.cmd.Wait()
		close(m.exited)
	}()
	return <-started
}

// boot waits for the leader, then for the system to finish booting.
func (m *Machine) boot(ctx context.Context) (string, error) {
	for !m.findLeader() {
		if m.hasExited() {
			return "", fmt.Errorf("systemd-nspawn exited before systemd started: %w", exitErr(m.waitErr))
		}
		if err := sleepCtx(ctx, pollInterval); err != nil {
			return "", fmt.Errorf("wait for the container's systemd: %w", err)
		}
	}
	// The bus appears a moment after PID 1: the first attempts fail with
	// "Failed to connect to bus", so retry.
	var last error
	for {
		out, err := m.nsenter(ctx, nil, "systemctl", "is-system-running", "--wait")
		st := strings.TrimSpace(out)
		switch st {
		case "running":
			return st, nil
		case "degraded":
			failed, _ := m.nsenter(ctx, nil, "systemctl", "--failed", "--no-legend", "--plain")
			m.logf("nspawn: %s: degraded; failed units:\n%s", m.Name, failed)
			return st, nil
		case "maintenance", "stopping":
			return "", fmt.Errorf("system is %s", st)
		}
		last = err
		if last == nil {
			last = fmt.Errorf("state %q", st)
		}
		if m.hasExited() {
			return "", fmt.Errorf("systemd-nspawn exited during boot: %w", exitErr(m.waitErr))
		}
		if err := sleepCtx(ctx, retryInterval); err != nil {
			return "", fmt.Errorf("wait for is-system-running (last: %w): %w", last, err)
		}
	}
}

// findLeader looks for the child of nspawn that runs systemd.
func (m *Machine) findLeader() bool {
	pids, _ := children(m.cmd.Process.Pid)
	for _, pid := range pids {
		if st, err := readStat(pid); err == nil && st.comm == "systemd" {
			m.leader = proc{pid: pid, start: st.start}
			m.Leader = pid
			return true
		}
	}
	return false
}

// Shutdown powers the container off through its leader and waits for
// systemd-nspawn to exit, bounded by Options.ShutdownTimeout. Past that, it
// kills the leader (which ends every process in the container) and then
// systemd-nspawn, by pid, and reports that it had to. It then checks that
// the leader and every process of the machine's cgroup are gone. Shutdown
// is idempotent and safe to call from t.Cleanup; later calls return the
// first call's result.
func (m *Machine) Shutdown() error {
	return m.end(false)
}

// abort ends a machine whose boot failed: there is nothing inside worth a
// clean poweroff, and a systemd still starting may not act on one.
func (m *Machine) abort() error {
	return m.end(true)
}

func (m *Machine) end(force bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.shut {
		m.shut = true
		m.stopping.Store(true)
		m.shutErr = m.shutdown(force)
	}
	return m.shutErr
}

func (m *Machine) shutdown(force bool) error {
	start := time.Now()
	var errs []error
	if !force {
		if err := m.powerOff(); err != nil {
			errs = append(errs, err)
		}
	}
	if !m.hasExited() {
		m.kill()
		if !m.waitExited(killWait) {
			errs = append(errs, fmt.Errorf("nspawn: %s: systemd-nspawn pid %d survived SIGKILL", m.Name, m.cmd.Process.Pid))
		}
	} else if !force && m.waitErr != nil {
		m.logf("nspawn: %s: systemd-nspawn: %v", m.Name, m.waitErr)
	}
	// nspawn reaps its leader before it exits; a leader that outlived nspawn
	// (killed from outside) would keep the container and its ports.
	if m.leader.pid > 0 && !m.leader.waitGone(killWait) {
		m.leader.kill(syscall.SIGKILL)
		if !m.leader.waitGone(killWait) {
			errs = append(errs, fmt.Errorf("nspawn: %s: leader pid %d survived SIGKILL", m.Name, m.leader.pid))
		} else {
			errs = append(errs, fmt.Errorf("nspawn: %s: leader pid %d outlived systemd-nspawn: killed", m.Name, m.leader.pid))
		}
	}
	// Every process nspawn started, at any stage, is in the machine's cgroup.
	left, err := m.sweep()
	if err != nil {
		errs = append(errs, err)
	} else if len(left) > 0 && !force {
		errs = append(errs, fmt.Errorf("nspawn: %s: processes left in the container's cgroup: %v: killed", m.Name, left))
	}
	if err := m.cg.remove(); err != nil {
		errs = append(errs, err)
	}
	m.saveConsole()
	if err := os.RemoveAll(m.dir); err != nil {
		errs = append(errs, fmt.Errorf("nspawn: %w", err))
	}
	m.logf("nspawn: %s: shut down in %v", m.Name, time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

// powerOff asks the container's systemd to power off and waits for nspawn
// to exit, bounded by the shutdown timeout.
func (m *Machine) powerOff() error {
	if m.hasExited() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.shutdownTimeout)
	defer cancel()
	if m.leader.alive() {
		// systemctl may fail with "Connection reset by peer" when systemd
		// drops the bus first: nspawn's exit is what counts.
		if _, err := m.nsenter(ctx, nil, "systemctl", "poweroff"); err != nil {
			m.logf("%v (waiting for the container anyway)", err)
		}
	}
	select {
	case <-m.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("nspawn: %s: not powered off within %v: killed", m.Name, m.shutdownTimeout)
	}
}

// kill ends the container by pid: its leader, whose death ends every
// process of its PID namespace, or before there is one, nspawn's children.
// nspawn then reaps them and exits by itself (killed first, it would leave
// their zombies to the host's PID 1); if it does not, it is killed too.
func (m *Machine) kill() {
	if m.leader.pid == 0 {
		// Before there is a leader, nspawn's children are setting up the
		// container; killed then, they leave their temporary directories
		// (/tmp/nspawn-volatile-*) behind. Give them a moment to finish.
		ctx, cancel := context.WithTimeout(context.Background(), killWait)
		for !m.findLeader() && !m.hasExited() && sleepCtx(ctx, pollInterval) == nil {
		}
		cancel()
	}
	n := 0
	if m.leader.pid > 0 {
		m.leader.kill(syscall.SIGKILL)
		n++
	} else {
		pids, _ := children(m.cmd.Process.Pid)
		for _, pid := range pids {
			if st, err := readStat(pid); err == nil {
				proc{pid: pid, start: st.start}.kill(syscall.SIGKILL)
				n++
			}
		}
	}
	if n > 0 && m.waitExited(killWait) {
		return
	}
	m.cmd.Process.Kill()
}

// sweep kills whatever is left in the machine's cgroup until it is empty,
// bounded, and returns the pids it found.
func (m *Machine) sweep() ([]int, error) {
	var found []int
	ctx, cancel := context.WithTimeout(context.Background(), killWait)
	defer cancel()
	for {
		left := m.cg.procs()
		if len(left) == 0 {
			return found, nil
		}
		for _, pid := range left {
			if st, err := readStat(pid); err == nil {
				if !slices.Contains(found, pid) {
					found = append(found, pid)
				}
				proc{pid: pid, start: st.start}.kill(syscall.SIGKILL)
			}
		}
		if sleepCtx(ctx, pollInterval) != nil {
			return found, fmt.Errorf("nspawn: %s: processes survive SIGKILL in the container's cgroup: %v", m.Name, left)
		}
	}
}

func (m *Machine) hasExited() bool {
	select {
	case <-m.exited:
		return true
	default:
		return false
	}
}

func (m *Machine) waitExited(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-m.exited:
		return true
	case <-t.C:
		return false
	}
}

// Console returns what systemd-nspawn and the container wrote to the
// console (nspawn's own errors among them).
func (m *Machine) Console() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.consoled {
		return m.console
	}
	b, _ := os.ReadFile(filepath.Join(m.dir, "console.log"))
	return string(b)
}

// saveConsole keeps the console log before its file is removed; m.mu held.
func (m *Machine) saveConsole() {
	b, _ := os.ReadFile(filepath.Join(m.dir, "console.log"))
	m.console, m.consoled = string(b), true
}

// consoleTail formats the end of the console log for an error message.
func (m *Machine) consoleTail() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "console.log"))
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	if len(s) > consoleTail {
		s = "..." + s[len(s)-consoleTail:]
	}
	return fmt.Sprintf(" (console: %q)", s)
}

// exitErr makes a nil Wait result readable in an error.
func exitErr(err error) error {
	if err == nil {
		return errors.New("exit status 0")
	}
	return err
}

// ensureRunTmpfs mounts a tmpfs on /run/systemd/nspawn unless it is on one
// already: nspawn needs it, and /run is not always a tmpfs.
func ensureRunTmpfs() error {
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return fmt.Errorf("nspawn: %w", err)
	}
	// Serialize with other test binaries on the parent: a lock on the mount
	// point would not be seen by a process that opens it after the mount.
	lock, err := os.Open(filepath.Dir(runDir))
	if err != nil {
		return fmt.Errorf("nspawn: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("nspawn: lock %s: %w", lock.Name(), os.NewSyscallError("flock", err))
	}
	ms, err := mounts()
	if err != nil {
		return fmt.Errorf("nspawn: %w", err)
	}
	if onTmpfs(ms, runDir) {
		return nil
	}
	if err := syscall.Mount("tmpfs", runDir, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("nspawn: mount tmpfs on %s: %w", runDir, os.NewSyscallError("mount", err))
	}
	return nil
}

// onTmpfs reports whether path lies on a tmpfs: the last-mounted of the
// mounts with the longest mount point containing it.
func onTmpfs(ms []mountInfo, path string) bool {
	best, fstype := -1, ""
	for _, m := range ms {
		if m.point == path || m.point == "/" || strings.HasPrefix(path, m.point+"/") {
			if len(m.point) >= best {
				best, fstype = len(m.point), m.fstype
			}
		}
	}
	return fstype == "tmpfs"
}

// bindArgs turns Options.Binds into --bind-ro options, in a stable order.
func bindArgs(binds map[string]string) ([]string, error) {
	hosts := make([]string, 0, len(binds))
	for h := range binds {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	var args []string
	for _, h := range hosts {
		c := binds[h]
		if !filepath.IsAbs(h) || !filepath.IsAbs(c) || strings.ContainsAny(h+c, ":,") {
			return nil, fmt.Errorf("nspawn: bind %q to %q: want absolute paths without ':' or ','", h, c)
		}
		if _, err := os.Stat(h); err != nil {
			return nil, fmt.Errorf("nspawn: bind: %w", err)
		}
		args = append(args, "--bind-ro="+filepath.Clean(h)+":"+filepath.Clean(c))
	}
	return args, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return s != "." && s != ".."
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
