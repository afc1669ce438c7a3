package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nobody is the second uid of the tests that play a hostile local user.
const nobody = 65534

// hostile is what a local user other than baton's does, as a Python
// program run as nobody (Debian's interpreter: any may do, it only makes
// directories and opens sockets).
const hostile = `
import errno, os, socket, sys
cmd = sys.argv[1]
if cmd == "squat":
    # Pre-create the runtime directories of the pids baton may get.
    base = sys.argv[2]
    for pid in sys.argv[3:]:
        d = os.path.join(base, "baton-" + pid)
        os.mkdir(d, 0o755)
        with open(os.path.join(d, "precious"), "w") as f:
            f.write("mine\n")
elif cmd == "poke":
    # One word per socket: "reached" or why not.
    kind, path = sys.argv[2], sys.argv[3]
    try:
        if kind == "stream":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.sendto(b"READY=1", path)
        print("reached")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))
`

// asNobody runs the hostile program as uid nobody and returns its output.
func asNobody(t *testing.T, args ...string) string {
	t.Helper()
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skipf("%s (Debian package python3) is not installed: %v", python, err)
	}
	cmd := exec.Command(python, append([]string{"-c", hostile}, args...)...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as nobody: %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// worldWritableDir returns a new directory anyone may write to but only
// the owner of an entry may remove it, as /tmp.
func worldWritableDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// t.TempDir's parent is private: let nobody reach this one.
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// nextPIDs returns the n pids the kernel will hand out next, as far as
// nothing else forks meanwhile.
func nextPIDs(t *testing.T, n int) []string {
	t.Helper()
	read := func(path string) int {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return v
	}
	last, max := read("/proc/sys/kernel/ns_last_pid"), read("/proc/sys/kernel/pid_max")
	var pids []string
	for pid := last + 1; len(pids) < n; pid++ {
		if pid >= max {
			pid = 301 // the kernel wraps around above the reserved pids
		}
		pids = append(pids, strconv.Itoa(pid))
	}
	return pids
}

// controlOf returns the control socket baton logged at start.
func controlOf(t testing.TB, p *proc) string {
	t.Helper()
	m := regexp.MustCompile(`control=(\S+)`).FindStringSubmatch(p.out.wait(regexp.MustCompile(`control=`), 10*time.Second))
	return m[1]
}

// ctl runs a baton command (reload, upgrade) and returns its exit code and
// output.
func ctl(t *testing.T, args ...string) (int, string) {
	t.Helper()
	return ctlEnv(t, nil, args...)
}

// ctlEnv is ctl with extra environment.
func ctlEnv(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	c := start(t, env, append([]string{bin.baton}, args...)...)
	code := c.waitExit(70 * time.Second)
	<-c.out.done
	return code, c.out.String()
}

// A local user who pre-creates every runtime directory baton used to pick
// ($TMPDIR/baton-PID) can neither keep a root baton from starting nor make
// it delete or use what they made; under a permissive umask no other user
// can reach baton's sockets, in its own runtime directory or in systemd's.
func TestRuntimeDirHostileNeighbour(t *testing.T) {
	tmp := worldWritableDir(t)
	squatted := nextPIDs(t, 3000)
	asNobody(t, append([]string{"squat", tmp}, squatted...)...)

	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	p := start(t, []string{"TMPDIR=" + tmp, "RUNTIME_DIRECTORY=", "XDG_RUNTIME_DIR="}, "sh", "-c", `umask 000; exec "$@"`, "sh",
		bin.baton, "run", "--listen", "http=tcp://"+addr, "--workers", "1", "--", bin.hello)
	p.out.wait(reAllReady, 30*time.Second)
	pid := strconv.Itoa(p.cmd.Process.Pid)
	if !strings.Contains(" "+strings.Join(squatted, " ")+" ", " "+pid+" ") {
		t.Fatalf("baton got pid %s, which the squatter did not foresee (%s..%s): something else forked meanwhile", pid, squatted[0], squatted[len(squatted)-1])
	}
	control := controlOf(t, p)
	dir := filepath.Dir(control)
	t.Logf("baton pid %s, runtime directory %s", pid, dir)
	if strings.HasPrefix(dir, tmp) && filepath.Base(dir) == "baton-"+pid {
		t.Fatalf("baton uses the squatted directory %s", dir)
	}
	checkPrivateSockets(t, dir)

	if code, out := ctl(t, "reload", "--pid", pid); code != 0 || !strings.Contains(out, "reload ok") {
		t.Errorf("baton reload --pid %s: exit %d: %s", pid, code, out)
	}
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	if code := p.waitExit(30 * time.Second); code != 0 {
		t.Errorf("baton exited %d after SIGTERM, want 0", code)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("baton's runtime directory %s is still there after it stopped: %v", dir, err)
	}
	for _, pid := range squatted {
		d := filepath.Join(tmp, "baton-"+pid)
		fi, err := os.Stat(d)
		b, ferr := os.ReadFile(filepath.Join(d, "precious"))
		if err != nil || ferr != nil || string(b) != "mine\n" || fi.Sys().(*syscall.Stat_t).Uid != nobody {
			t.Fatalf("the squatter's %s was touched: %v %v %q", d, err, ferr, b)
		}
	}

	t.Run("systemd's RUNTIME_DIRECTORY", func(t *testing.T) {
		rd := t.TempDir()
		os.Chmod(filepath.Dir(rd), 0o755)
		os.Chmod(rd, 0o755) // RuntimeDirectoryMode='s default
		addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
		p := start(t, []string{"RUNTIME_DIRECTORY=" + rd}, "sh", "-c", `umask 000; exec "$@"`, "sh",
			bin.baton, "run", "--listen", "http=tcp://"+addr, "--workers", "1", "--", bin.hello)
		p.out.wait(reAllReady, 30*time.Second)
		checkPrivateSockets(t, rd)
		p.stop()
		if _, err := os.Stat(rd); err != nil {
			t.Errorf("baton removed systemd's RUNTIME_DIRECTORY: %v", err)
		}
	})
}

// checkPrivateSockets checks that the sockets in a runtime directory are
// owner-only and that nobody can reach them.
func checkPrivateSockets(t *testing.T, dir string) {
	t.Helper()
	socks, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
	if len(socks) != 2 {
		t.Fatalf("runtime directory %s holds %v, want the notify and the control socket", dir, socks)
	}
	for _, s := range socks {
		fi, err := os.Stat(s)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", s, fi.Mode(), err)
		}
		kind := "stream"
		if strings.HasPrefix(filepath.Base(s), "notify-") {
			kind = "dgram"
		}
		if got := asNobody(t, "poke", kind, s); got != "EACCES" {
			t.Errorf("nobody reaching %s: %s, want EACCES", s, got)
		}
	}
}

// Two batons with the same pid (1, each in its own PID namespace) and the
// same TMPDIR keep to their own sockets: a reload aimed at one reloads
// that one, and each one's workers report to it.
func TestRuntimeDirSamePIDTwoNamespaces(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare is not installed (Debian package util-linux): ", err)
	}
	tmp := t.TempDir()
	type ns struct {
		p       *proc
		pid     int // on the host
		control string
	}
	var batons []ns
	for range 2 {
		addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
		p := start(t, []string{"TMPDIR=" + tmp}, unshare, "--pid", "--fork", "--mount-proc", "--kill-child",
			bin.baton, "run", "--listen", "http=tcp://"+addr, "--workers", "2", "--", bin.hello)
		p.out.wait(reAllReady, 30*time.Second)
		b := ns{p: p, control: controlOf(t, p)}
		for _, pid := range p.descendants() {
			if comm(pid) == "baton" && nsPid(pid) == 1 {
				b.pid = pid
			}
		}
		if b.pid == 0 {
			t.Fatal("no baton with pid 1 under unshare")
		}
		batons = append(batons, b)
	}
	if batons[0].control == batons[1].control {
		t.Fatalf("both batons answer on %s", batons[0].control)
	}
	reReloading := regexp.MustCompile(`msg=reloading`)
	for i, b := range batons {
		other := batons[1-i]
		before := other.p.out.count(reReloading)
		code, out := ctl(t, "reload", "--pid", strconv.Itoa(b.pid))
		if code != 0 || !strings.Contains(out, "reload ok") {
			t.Errorf("baton reload --pid %d: exit %d: %s", b.pid, code, out)
		}
		b.p.out.wait(regexp.MustCompile(`msg="reload done"`), 10*time.Second)
		if n := other.p.out.count(reReloading); n != before {
			t.Errorf("reloading baton %d reloaded baton %d too", b.pid, other.pid)
		}
	}
}

// A self-upgrade keeps the runtime directory: the new baton answers on
// the same control socket (found again by its pid), and the last baton
// removes the directory when it stops.
func TestRuntimeDirFollowsUpgrade(t *testing.T) {
	childSubreaper(t)
	b := startBaton(t, "--workers", "1", "--", bin.hello)
	control := controlOf(t, b.proc)
	old := b.cmd.Process.Pid
	code, out := ctl(t, "upgrade", "--pid", strconv.Itoa(old))
	m := regexp.MustCompile(`upgrade ok: baton pid (\d+) serving generation 2`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("baton upgrade --pid %d: exit %d: %s", old, code, out)
	}
	newPID, _ := strconv.Atoi(m[1])
	b.follow(newPID)
	if got := b.exitOf(old, 30*time.Second); got != "exit status 0" {
		t.Errorf("the old baton ended with %s, want exit status 0", got)
	}
	code, out = ctl(t, "reload", "--pid", m[1])
	if code != 0 || !strings.Contains(out, "generation 3") {
		t.Errorf("baton reload --pid %d (the new baton): exit %d: %s", newPID, code, out)
	}
	if code, out := ctl(t, "reload", "--control", control); code != 0 {
		t.Errorf("baton reload --control %s (the old path): exit %d: %s", control, code, out)
	}
	b.stop()
	if got := b.exitOf(newPID, 30*time.Second); got != "exit status 0" {
		t.Errorf("the new baton ended with %s, want exit status 0", got)
	}
	if _, err := os.Stat(filepath.Dir(control)); !os.IsNotExist(err) {
		t.Errorf("the runtime directory %s is still there after the last baton stopped: %v", filepath.Dir(control), err)
	}
}
