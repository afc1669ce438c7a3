package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/control"
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

// `baton CMD SERVICE` finds the baton of a systemd service in the
// service's RuntimeDirectory=, where baton puts its control socket by
// default: here a user service's, $XDG_RUNTIME_DIR/NAME (a system
// service's is /run/NAME, where NAME has none), its baton started with
// RUNTIME_DIRECTORY set as systemd sets it. A name that is no service's
// is a usage error (exit 2), one whose baton is not there says where it
// looked (exit 1), and a SERVICE with --control is refused.
func TestControlFindsTheService(t *testing.T) {
	xdg := t.TempDir()
	name := "baton-it-" + strconv.Itoa(os.Getpid())
	if _, err := os.Stat(filepath.Join("/run", name)); err == nil {
		t.Fatalf("/run/%s exists: the test needs a service name no system service has", name)
	}
	if err := os.Mkdir(filepath.Join(xdg, name), 0o755); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	p := start(t, []string{"RUNTIME_DIRECTORY=" + filepath.Join(xdg, name)}, bin.baton, "run", "--listen", "http=tcp://"+addr, "--workers", "1", "--", bin.hello)
	p.out.wait(reAllReady, 30*time.Second)
	env := []string{"XDG_RUNTIME_DIR=" + xdg, "RUNTIME_DIRECTORY=", "BATON_SOCKET="}
	baton := func(args ...string) (int, string) {
		t.Helper()
		return ctlEnv(t, env, args...)
	}

	code, out := baton("status", name, "--json")
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.PID != p.cmd.Process.Pid {
		t.Errorf("status %s --json: exit %d, pid %d (%v), want baton's %d: %s", name, code, st.PID, err, p.cmd.Process.Pid, out)
	}
	if code, out := baton("scale", name+".service", "2"); code != 0 || !strings.Contains(out, "scale ok: generation 1 serving with 2 workers") {
		t.Errorf("scale %s.service 2: exit %d: %s", name, code, out)
	}
	if code, out := baton("logs", name, "--slot", "1", "-n", "1"); code != 0 || !strings.Contains(out, "[worker 1 pid ") {
		t.Errorf("logs %s --slot 1: exit %d: %s", name, code, out)
	}
	if code, out := baton("restart", name, "0"); code != 0 || !strings.Contains(out, "restart ok: generation 1 serving with 2 workers") {
		t.Errorf("restart %s 0: exit %d: %s", name, code, out)
	}

	code, out = baton("status", "../"+name)
	if want := `baton status: service "../` + name + `": want a systemd service's name`; code != 2 || !strings.HasPrefix(out, want) || strings.Contains(out, "\n") {
		t.Errorf("status ../%s: exit %d: %q; want exit 2 and one line %q...", name, code, out, want)
	}
	code, out = baton("reload", name+"-none")
	if want := "baton reload: no baton of service " + name + "-none: no control socket at /run/" + name + "-none/baton.sock or " + xdg + "/" + name + "-none/baton.sock ("; code != 1 || !strings.HasPrefix(out, want) || strings.Contains(out, "\n") {
		t.Errorf("reload %s-none: exit %d: %q; want exit 1 and one line %q...", name, code, out, want)
	}
	if code, out := baton("stop", name, "--control", filepath.Join(xdg, name, "baton.sock")); code != 2 || !strings.Contains(out, "name the baton twice") {
		t.Errorf("stop %s --control: exit %d: %s", name, code, out)
	}
	if code, out := baton("stop", name); code != 0 || !strings.Contains(out, "stop ok") {
		t.Errorf("stop %s: exit %d: %s", name, code, out)
	}
	if code := p.waitExit(30 * time.Second); code != 0 {
		t.Errorf("baton exited %d after baton stop %s", code, name)
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
		if code != 1 || !strings.Contains(out, "baton reload: refused: uid 65534 may not control this baton (only root and uid 0 may)") {
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

// `--config FILE` of a file that sets no control.socket reaches the baton
// started with that file, however either spells the path (relative to its
// own directory, through a symlink), whatever $BATON_SOCKET says; with
// none it is refused and with two it names them, and no other baton is
// touched.
func TestControlConfigReachesItsBaton(t *testing.T) {
	dir := t.TempDir()
	write := func(name string) string {
		path := filepath.Join(dir, name)
		addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
		if err := os.WriteFile(path, []byte(batonConfig(addr, 1, nil, "")), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	a, b := write("a.toml"), write("b.toml")
	runB := start(t, nil, bin.baton, "run", "--config", b)
	runB.out.wait(reAllReady, 30*time.Second)
	controlB := controlOf(t, runB)
	// $BATON_SOCKET names B: --config must win over it.
	env := []string{"BATON_SOCKET=" + controlB, "RUNTIME_DIRECTORY="}
	alive := func(what string) {
		t.Helper()
		select {
		case <-runB.exited:
			t.Fatalf("%s stopped the baton of b.toml", what)
		default:
		}
		if st := stats(t, controlB); st.Generation != 1 {
			t.Errorf("after %s the baton of b.toml serves generation %d, want 1 (untouched)", what, st.Generation)
		}
	}

	code, out := ctlEnv(t, env, "stop", "--config", a)
	if code != 2 || !strings.Contains(out, "baton stop: no running baton of uid 0 was started with --config "+a) || strings.Contains(out, "\n") {
		t.Errorf("stop --config a.toml with no baton of a.toml: exit %d: %s", code, out)
	}
	alive("stop --config a.toml")

	// A runs from dir, with the relative path.
	runA := start(t, nil, "sh", "-c", `cd "$1" && exec "$2" run --config a.toml`, "sh", dir, bin.baton)
	runA.out.wait(reAllReady, 30*time.Second)
	pidA := runA.cmd.Process.Pid
	link := filepath.Join(t.TempDir(), "link.toml")
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}

	// A second baton of a.toml (on another port): refused, naming both.
	other := "127.0.0.1:" + strconv.Itoa(freePort(t))
	runA2 := start(t, nil, bin.baton, "run", "--config", a, "--listen", "http=tcp://"+other)
	runA2.out.wait(reAllReady, 30*time.Second)
	code, out = ctlEnv(t, env, "status", "--config", link)
	pa, pa2 := strconv.Itoa(pidA), strconv.Itoa(runA2.cmd.Process.Pid)
	if code != 2 || !strings.Contains(out, "2 batons were started with --config "+link+": pid "+pa+" (") || !strings.Contains(out, "pid "+pa2+" (") || !strings.Contains(out, "--pid PID") {
		t.Errorf("status --config with two batons of a.toml (%s, %s): exit %d: %s", pa, pa2, code, out)
	}
	runA2.stop()

	code, out = ctlEnv(t, env, "status", "--json", "--config", link)
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.PID != pidA {
		t.Errorf("status --config %s (a symlink to a.toml), baton of a.toml is pid %d: exit %d (%v): %s", link, pidA, code, err, out)
	}
	// The command runs in the repository: a path relative to it.
	rel, err := filepath.Rel(repoRoot, a)
	if err != nil {
		t.Fatal(err)
	}
	code, out = ctlEnv(t, env, "stop", "--config", rel)
	if code != 0 || !strings.Contains(out, "stop ok") {
		t.Errorf("stop --config %s: exit %d: %s", rel, code, out)
	}
	if code := runA.waitExit(30 * time.Second); code != 0 {
		t.Errorf("the baton of a.toml exited %d after stop --config a.toml, want 0", code)
	}
	alive("stop --config a.toml")
}

// fakeBaton is a control server that is no baton: it answers every
// request as a baton would, and says what it was asked.
const fakeBaton = `import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(8)
print("listening", flush=True)
s.settimeout(60)
end = time.time() + 60
while time.time() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        break
    c.settimeout(5)
    try:
        line = c.makefile().readline()
        if line:
            print("asked:", line.strip(), flush=True)
        c.sendall(b'{"ok": true, "generation": 99, "workers": 42}\n')
    except OSError:
        pass
    c.close()
`

// A process that is not a baton of the caller's user gets no request,
// found by its pid or by its socket: not another user's control server
// named baton.sock, not one of the caller's own that is no baton (whose
// socket is the caller's, and answers a request sent to it directly).
func TestControlRefusesFakeBatons(t *testing.T) {
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skipf("%s (Debian package python3) is not installed: %v", python, err)
	}
	reAsked := regexp.MustCompile(`^asked:`)
	for _, tt := range []struct {
		name   string
		argv   func(path string) []string
		refuse string // why --pid is refused
		// socket: what a request to its socket, found by looking
		// around, gets: refused unless the socket is the caller's.
		socket string
	}{
		{"nobody's", func(path string) []string { return asUser(t, python, "-c", fakeBaton, path) },
			"runs as uids 65534 65534 65534 65534, not yours (uid 0)", "is uid 65534's, not yours (uid 0)"},
		{"root's", func(path string) []string { return []string{python, "-c", fakeBaton, path} },
			`is not a baton: it runs "python3", not "baton run"`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(worldWritableDir(t), "baton.sock")
			fake := start(t, nil, tt.argv(path)...)
			fake.out.wait(regexp.MustCompile(`^listening`), 10*time.Second)
			pid := strconv.Itoa(fake.cmd.Process.Pid)
			for _, cmd := range []string{"reload", "stop"} {
				code, out := ctlEnv(t, []string{"BATON_SOCKET=", "RUNTIME_DIRECTORY="}, cmd, "--pid", pid)
				if code != 2 || !strings.Contains(out, "baton "+cmd+": pid "+pid+" "+tt.refuse) || strings.Contains(out, "\n") {
					t.Errorf("%s --pid %s: exit %d: %s", cmd, pid, code, out)
				}
			}
			asked := 0
			_, err := control.Client{Path: path, Own: true}.Request(withTimeout(t, 10*time.Second), control.Request{Command: "stats"})
			switch {
			case tt.socket == "" && err == nil:
				asked = 1
			case tt.socket == "" || err == nil || !strings.Contains(err.Error(), "control socket "+path+" "+tt.socket):
				t.Errorf("stats to the fake's socket, found by looking around: %v, want %q", err, tt.socket)
			}
			if asked > 0 {
				// The fake says so before it answers, but its output
				// may still be on its way to this test.
				fake.out.waitCount(reAsked, asked, 10*time.Second)
			}
			if n := fake.out.count(reAsked); n != asked {
				t.Errorf("the fake was asked %d requests, want %d:\n%s", n, asked, fake.out)
			}
		})
	}
}
