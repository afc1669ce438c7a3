package nspawn

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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary a helper process that boots a machine,
// prints its pids, and waits to be killed (see TestParentDeath).
const helperEnv = "BATON_NSPAWN_TEST_HELPER"

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(helperMain(name))
	}
	os.Exit(m.Run())
}

func helperMain(name string) int {
	m, err := Boot(context.Background(), Options{Name: name})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("%d %d %s\n", m.Leader, m.cmd.Process.Pid, m.dir)
	io.Copy(io.Discard, os.Stdin) // until killed, or the parent goes away
	m.Shutdown()
	return 0
}

func TestBoot(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "hello.txt"), []byte("bound\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	m, err := Boot(ctx, Options{Binds: map[string]string{bin: "/opt/baton"}, Log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	booted := time.Since(start)
	t.Cleanup(func() {
		if err := m.Shutdown(); err != nil {
			t.Error(err)
		}
	})
	t.Logf("boot to running: %v", booted.Round(time.Millisecond))

	run := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := m.Run(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	if st := run(t, "systemctl", "is-system-running"); st != "running" {
		t.Fatalf("is-system-running = %q, want running; failed units:\n%s", st, run(t, "systemctl", "--failed", "--no-legend"))
	}
	if comm := run(t, "cat", "/proc/1/comm"); comm != "systemd" {
		t.Errorf("PID 1 inside is %q, want systemd", comm)
	}
	// No unit of the host's packages is enabled inside (Debian's presets
	// would enable e2scrub_reap, fstrim.timer, and an installed nginx that
	// fails there), so the boot reaches running whatever the host has.
	if out, _ := m.Run(ctx, "systemctl", "list-unit-files", "--state=enabled", "--no-legend", "--plain"); strings.TrimSpace(out) != "" {
		t.Errorf("units enabled in the container, want none:\n%s", out)
	}
	if host := run(t, "cat", "/proc/sys/kernel/hostname"); host != m.Name {
		t.Errorf("hostname inside = %q, want the machine name %q", host, m.Name)
	}

	// Binds are visible and read-only; a failing command reports its exit
	// status and standard error.
	if got := run(t, "cat", "/opt/baton/hello.txt"); got != "bound" {
		t.Errorf("bound file = %q, want %q", got, "bound")
	}
	_, err = m.Run(ctx, "touch", "/opt/baton/new")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(err.Error(), "Read-only file system") {
		t.Errorf("touch in a read-only bind: err = %v, want an exit status and touch's complaint", err)
	}

	t.Run("socket activation from the host", func(t *testing.T) {
		port := freePort(t)
		units := map[string]string{
			"/run/systemd/system/echo.socket":   fmt.Sprintf("[Socket]\nListenStream=127.0.0.1:%d\nAccept=yes\n", port),
			"/run/systemd/system/echo@.service": "[Service]\nExecStart=/usr/bin/cat\nStandardInput=socket\n",
		}
		for path, text := range units {
			if err := m.WriteFile(path, []byte(text)); err != nil {
				t.Fatal(err)
			}
		}
		if got := run(t, "cat", "/run/systemd/system/echo@.service"); got != strings.TrimSpace(units["/run/systemd/system/echo@.service"]) {
			t.Fatalf("WriteFile wrote %q", got)
		}
		if _, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Systemctl(ctx, "start", "echo.socket"); err != nil {
			t.Fatal(err)
		}
		if err := m.WaitActive(ctx, "echo.socket"); err != nil {
			t.Fatal(err)
		}
		const msg = "hello through systemd\n"
		if got, err := echo(port, msg); err != nil || got != msg {
			t.Errorf("echo via 127.0.0.1:%d = %q, %v; want %q\njournal:\n%s", port, got, err, msg, m.Journal(ctx, "echo@*"))
		}
	})

	t.Run("WaitActive and MainPID", func(t *testing.T) {
		run(t, "systemd-run", "--unit=probe-sleep", "-p", "Type=exec", "/usr/bin/sleep", "300")
		if err := m.WaitActive(ctx, "probe-sleep.service"); err != nil {
			t.Fatal(err)
		}
		pid, err := m.MainPID(ctx, "probe-sleep.service")
		if err != nil || pid <= 1 {
			t.Fatalf("MainPID = %d, %v", pid, err)
		}
		if comm := run(t, "cat", "/proc/"+strconv.Itoa(pid)+"/comm"); comm != "sleep" {
			t.Errorf("MainPID %d runs %q, want sleep", pid, comm)
		}
		if j := m.Journal(ctx, "probe-sleep.service"); !strings.Contains(j, "probe-sleep.service") {
			t.Errorf("journal of probe-sleep.service does not name it:\n%s", j)
		}

		// A oneshot goes from activating to failed, never active; with
		// --no-block, systemd-run does not wait for that itself.
		run(t, "systemd-run", "--no-block", "--unit=probe-fail", "-p", "Type=oneshot", "/usr/bin/false")
		start := time.Now()
		err = m.WaitActive(ctx, "probe-fail.service")
		if err == nil || !strings.Contains(err.Error(), "failed") {
			t.Errorf("WaitActive(probe-fail) = %v, want a failure", err)
		}
		if d := time.Since(start); d > DefaultWaitTimeout/2 {
			t.Errorf("WaitActive took %v to see a failed unit", d)
		}
		if pid, err := m.MainPID(ctx, "probe-fail.service"); err == nil {
			t.Errorf("MainPID of a dead unit = %d, want an error", pid)
		}
	})

	t.Run("Run cancelled", func(t *testing.T) {
		// nsenter leaves its command running when it is killed: Run must
		// end the command inside too.
		rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer rcancel()
		if _, err := m.Run(rctx, "sleep", "31"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run(sleep 31) past its deadline = %v, want a deadline error", err)
		}
		if out, err := m.Run(ctx, "pgrep", "-f", "sleep 31"); err == nil {
			t.Errorf("the command of a cancelled Run lives on inside: pid %s", out)
		}
		// Nor as a zombie, which only the host's PID 1 would reap and which
		// holds up the container's poweroff.
		for _, line := range strings.Split(run(t, "ps", "-eo", "stat=,pid=,comm="), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "Z") {
				t.Errorf("zombie inside after a cancelled Run: %s", line)
			}
		}
	})

	if t.Failed() {
		return // the cleanup shuts down
	}
	leader, nspawnPid := m.leader, m.cmd.Process.Pid
	pidns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", leader.pid))
	if err != nil {
		t.Fatal(err)
	}
	cgdirs := m.cg.dirs
	start = time.Now()
	if err := m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	// An idle container powers off in well under a second; systemd-shutdown
	// gives up on a process it cannot end after about 10s.
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("shutdown took %v: something held up the poweroff", d)
	} else {
		t.Logf("shutdown: %v", d.Round(time.Millisecond))
	}

	if leader.alive() {
		t.Errorf("leader pid %d still alive", leader.pid)
	}
	if !m.hasExited() {
		t.Errorf("systemd-nspawn pid %d has not exited", nspawnPid)
	}
	if left := inPidNamespace(t, pidns); len(left) > 0 {
		t.Errorf("processes of the container's pid namespace %s left: %v", pidns, left)
	}
	for _, d := range cgdirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s not removed: %v", d, err)
		}
	}
	if kids, _ := children(os.Getpid()); len(kids) > 0 {
		t.Errorf("child processes left: %v", kids)
	}
	if err := m.Shutdown(); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
	if _, err := m.Run(ctx, "true"); err == nil {
		t.Error("Run after Shutdown succeeded")
	}
}

// TestParentDeath checks the hygiene promise of the package comment: a test
// binary killed with SIGKILL (no cleanup at all) still takes its container
// down, through nspawn's parent-death signal.
func TestParentDeath(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	// As a subreaper, this process inherits the helper's nspawn when the
	// helper dies, and reaps it rather than leave a zombie to the host.
	if err := setSubreaper(1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { setSubreaper(0) })
	name := fmt.Sprintf("baton-it-%d-orphan", os.Getpid())
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+name)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var leaderPid, nspawnPid int
	var dir string
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if _, serr := fmt.Sscan(line, &leaderPid, &nspawnPid, &dir); err != nil || serr != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %q, %v, %v", line, err, serr)
	}
	st, err := readStat(leaderPid)
	if err != nil || st.comm != "systemd" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper's leader pid %d: %+v, %v", leaderPid, st, err)
	}
	leader := proc{pid: leaderPid, start: st.start}
	var nspawn proc
	if st, err := readStat(nspawnPid); err == nil {
		nspawn = proc{pid: nspawnPid, start: st.start}
	}
	t.Cleanup(func() {
		// Only if the promise failed: power off by the leader, as docs/testing.md says.
		if leader.alive() {
			exec.Command("nsenter", "-t", strconv.Itoa(leader.pid), "-a", "systemctl", "poweroff").Run()
			if !leader.waitGone(DefaultShutdownTimeout) {
				leader.kill(syscall.SIGKILL)
			}
		}
		if !reap(nspawn.pid, killWait) && nspawn.alive() {
			nspawn.kill(syscall.SIGKILL)
			reap(nspawn.pid, killWait)
		}
		// What a killed test binary leaves behind: its empty cgroup and
		// its temporary directory.
		if dirs, err := cgroupDirs(name); err == nil {
			if err := (&cgroup{dirs: dirs}).remove(); err != nil {
				t.Error(err)
			}
		}
		if strings.HasPrefix(filepath.Base(dir), "baton-nspawn-") {
			os.RemoveAll(dir)
		}
	})

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	start := time.Now()
	if !leader.waitGone(DefaultShutdownTimeout) {
		t.Fatalf("container of a SIGKILLed test binary still runs (leader pid %d)", leader.pid)
	}
	t.Logf("container halted %v after its test binary was killed", time.Since(start).Round(time.Millisecond))
	if !reap(nspawnPid, killWait) {
		t.Errorf("systemd-nspawn pid %d (orphaned, so this process's child) did not exit", nspawnPid)
	}
}

// setSubreaper sets or clears PR_SET_CHILD_SUBREAPER for this process.
func setSubreaper(on uintptr) error {
	const prSetChildSubreaper = 36
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, on, 0); e != 0 {
		return os.NewSyscallError("prctl", e)
	}
	return nil
}

// reap waits up to d for the child pid to exit, and reaps it.
func reap(pid int, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if got == pid {
			return true
		}
		if err != nil || sleepCtx(ctx, pollInterval) != nil {
			return false
		}
	}
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// echo sends msg to 127.0.0.1:port, closes its side and returns the reply.
func echo(port int, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// inPidNamespace lists the host processes in the pid namespace ns.
func inPidNamespace(t *testing.T, ns string) []int {
	t.Helper()
	names, err := filepath.Glob("/proc/[0-9]*/ns/pid")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, n := range names {
		if l, err := os.Readlink(n); err == nil && l == ns {
			pid, _ := strconv.Atoi(strings.Split(n, "/")[2])
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestShutdownKills checks the path taken when poweroff does not finish in
// time: the leader and nspawn are killed by pid, and Shutdown says so.
func TestShutdownKills(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A shutdown bound that has passed before poweroff can even start.
	m, err := Boot(ctx, Options{Log: t.Logf, ShutdownTimeout: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	leader, cgdirs := m.leader, m.cg.dirs
	err = m.Shutdown()
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Shutdown = %v, want an error saying it killed", err)
	}
	if leader.alive() || !m.hasExited() {
		t.Errorf("after Shutdown: leader alive %v, nspawn exited %v", leader.alive(), m.hasExited())
	}
	for _, d := range cgdirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s not removed: %v", d, err)
		}
	}
}

// TestBootTimeout checks that a boot cut short leaves nothing behind, at
// whatever stage it is cut.
func TestBootTimeout(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	for _, d := range []time.Duration{time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond} {
		name := fmt.Sprintf("baton-it-%d-timeout-%d", os.Getpid(), d.Milliseconds())
		m, err := Boot(context.Background(), Options{Name: name, Log: t.Logf, BootTimeout: d})
		if err == nil {
			m.Shutdown()
			t.Logf("booted within %v", d)
			continue
		}
		t.Logf("boot within %v: %v", d, err)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("boot within %v: %v, want a deadline error", d, err)
		}
		if left := withArg("--machine=" + name); len(left) > 0 {
			t.Errorf("boot within %v: processes left: %v", d, left)
		}
		dirs, _ := cgroupDirs(name)
		for _, dir := range dirs {
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cgroup %s not removed: %v", dir, err)
			}
		}
	}
	if kids, _ := children(os.Getpid()); len(kids) > 0 {
		t.Errorf("child processes left: %v", kids)
	}
}

// withArg lists the processes with arg on their command line.
func withArg(arg string) []int {
	names, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []int
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == arg {
				pid, _ := strconv.Atoi(strings.Split(n, "/")[2])
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func TestInstallIdempotent(t *testing.T) {
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		t.Skip("systemd-nspawn not installed; Install would install it")
	}
	if err := Install(context.Background()); err != nil {
		t.Errorf("Install with systemd-nspawn present = %v", err)
	}
	if !strings.Contains(installScript, "apt-get install -y systemd-container") {
		t.Errorf("embedded install.sh does not install systemd-container:\n%s", installScript)
	}
}
