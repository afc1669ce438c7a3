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

	"github.com/batonhq/baton/internal/supervisor"
)

// asUser returns argv run as uid nobody (setpriv execs it: the pid is the
// program's own), and lets nobody reach the test's binaries.
func asUser(t *testing.T, argv ...string) []string {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv is not installed (Debian package util-linux): ", err)
	}
	if err := os.Chmod(bin.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	id := strconv.Itoa(nobody)
	return append([]string{setpriv, "--reuid=" + id, "--regid=" + id, "--clear-groups", "--"}, argv...)
}

// ctlAs runs a baton command as nobody, with no way to name the socket
// but its flags.
func ctlAs(t *testing.T, args ...string) (int, string) {
	t.Helper()
	c := start(t, []string{"BATON_SOCKET=", "RUNTIME_DIRECTORY="}, asUser(t, append([]string{bin.baton}, args...)...)...)
	code := c.waitExit(70 * time.Second)
	<-c.out.done
	return code, c.out.String()
}

// With no flag, `baton reload` finds the one baton of its user that is
// running; with two, it says which are there and how to pick one, and
// --pid picks; with none, it says so. (The batons and the commands run as
// nobody: the suite's other batons are root's.)
func TestControlFindsTheBaton(t *testing.T) {
	runAs := func() *proc {
		addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
		p := start(t, []string{"RUNTIME_DIRECTORY=", "XDG_RUNTIME_DIR=", "TMPDIR=/tmp"},
			asUser(t, bin.baton, "run", "--listen", "http=tcp://"+addr, "--workers", "1", "--", bin.hello)...)
		p.out.wait(reAllReady, 30*time.Second)
		return p
	}
	if code, out := ctlAs(t, "reload"); code != 2 || !strings.Contains(out, "no baton of uid 65534 is running") {
		t.Errorf("with no baton: exit %d: %s", code, out)
	}
	a := runAs()
	if code, out := ctlAs(t, "reload"); code != 0 || !strings.Contains(out, "reload ok: generation 2") {
		t.Errorf("with one baton: exit %d: %s", code, out)
	}
	b := runAs()
	code, out := ctlAs(t, "reload")
	pa, pb := strconv.Itoa(a.cmd.Process.Pid), strconv.Itoa(b.cmd.Process.Pid)
	if code != 2 || !strings.Contains(out, "2 batons are running: pid "+pa+" (") || !strings.Contains(out, "pid "+pb+" (") || !strings.Contains(out, "--pid PID") {
		t.Errorf("with two batons (%s, %s): exit %d: %s", pa, pb, code, out)
	}
	if code, out := ctlAs(t, "reload", "--pid", pb); code != 0 || !strings.Contains(out, "reload ok: generation 2") {
		t.Errorf("--pid %s: exit %d: %s", pb, code, out)
	}
	if n := a.out.count(regexp.MustCompile(`msg=reloading`)); n != 1 {
		t.Errorf("the first baton reloaded %d times, want once", n)
	}
	for _, p := range []*proc{a, b} {
		syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
		if code := p.waitExit(30 * time.Second); code != 0 {
			t.Errorf("baton %d exited %d after SIGTERM", p.cmd.Process.Pid, code)
		}
	}
	// A socket nobody answers on: the error names it, and the way out.
	if code, out := ctlAs(t, "reload", "--control", "/nonexistent/baton.sock"); code != 1 ||
		!strings.Contains(out, "no baton answers on /nonexistent/baton.sock") || !strings.Contains(out, "--control PATH") {
		t.Errorf("a path with no baton: exit %d: %s", code, out)
	}
}

// A control socket another user can reach (a careless chmod) still gives
// that user nothing: its request is refused, saying why, and counted;
// baton's own user is served as before.
func TestControlRefusesOtherUsers(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	control := filepath.Join(dir, "ctl.sock")
	b := startBaton(t, "--workers", "1", "--control", control, "--", bin.hello)
	if err := os.Chmod(control, 0o666); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		code, out := ctlAs(t, "reload", "--control", control)
		if code != 1 || !strings.Contains(out, "control: refused: uid 65534 may not control this baton (only root and uid 0 may)") {
			t.Errorf("reload as nobody: exit %d: %s", code, out)
		}
	}
	if st := stats(t, control); st.ControlRefused != 3 || st.Generation != 1 || st.Reloading {
		t.Errorf("after 3 requests of nobody: %d refused, generation %d (reloading %v); want 3 refused, generation 1", st.ControlRefused, st.Generation, st.Reloading)
	}
	if code, out := ctl(t, "reload", "--control", control); code != 0 || !strings.Contains(out, "reload ok: generation 2") {
		t.Errorf("reload as root: exit %d: %s", code, out)
	}
	b.stop()
}

// A socket found by looking around is only trusted if its owner is the
// caller: one that another user listens on (named baton.sock, held by
// whatever process) is refused, saying whose it is.
func TestControlTrustsOnlyOwnSockets(t *testing.T) {
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skipf("%s (Debian package python3) is not installed: %v", python, err)
	}
	dir := worldWritableDir(t)
	path := filepath.Join(dir, "baton.sock")
	listen := `import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(8)
print("listening", flush=True)
time.sleep(60)`
	p := start(t, nil, asUser(t, python, "-c", listen, path)...)
	p.out.wait(regexp.MustCompile(`^listening`), 10*time.Second)
	err := supervisor.CheckOwner(path, 0)
	if err == nil || !strings.Contains(err.Error(), "is uid 65534's, not yours (uid 0)") {
		t.Errorf("CheckOwner of nobody's socket, as root: %v", err)
	}
	if err := supervisor.CheckOwner(path, nobody); err != nil {
		t.Errorf("CheckOwner of nobody's socket, for nobody: %v", err)
	}
}
