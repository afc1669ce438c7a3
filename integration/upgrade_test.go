package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/loadtest"
)

// upBaton is a baton that can replace itself (docs/architecture.md, "Self-upgrade"). It runs from
// its own copy of the executable, which a test replaces as a deploy would
// (never the shared build other tests use), and its control socket is at a
// fixed path (control.socket), where every successor answers: without it
// the socket would live in $TMPDIR/baton-PID and move with the pid.
type upBaton struct {
	*proc
	dir, exe, cfgPath, control, addr string
	// registered: an upgrade was tried, so the upgrader holds a copy of
	// the listener.
	registered bool
}

// upgradeConfig renders a config for 2 workers running command (nil:
// hello) with the given reload.timeout, a drain_timeout long enough for a
// hung drain to show, and the control socket at control.
func upgradeConfig(addr, control string, command []string, timeout string) string {
	if command == nil {
		command = []string{bin.hello}
	}
	q := make([]string, len(command))
	for i, c := range command {
		q[i] = strconv.Quote(c)
	}
	return fmt.Sprintf(`[[listen]]
name = "http"
address = "tcp://%s"

[worker]
command = [%s]
count = 2
ready = "notify"
drain_timeout = "20s"

[reload]
timeout = %q

[control]
socket = %q
`, addr, strings.Join(q, ", "), timeout, control)
}

// startUpgradable runs baton from a copy of bin.baton in a temporary
// directory, with the config cfg renders, and waits until it serves. The
// test process becomes a child subreaper, so that every baton that takes
// over is re-parented to it (and reaped, and ended at cleanup).
func startUpgradable(t testing.TB, cfg func(addr, control string) string) *upBaton {
	t.Helper()
	return startUpgradableOf(t, bin.baton, cfg)
}

// startUpgradableOf is startUpgradable with another build of baton.
func startUpgradableOf(t testing.TB, build string, cfg func(addr, control string) string) *upBaton {
	t.Helper()
	childSubreaper(t)
	dir := t.TempDir()
	u := &upBaton{
		dir:     dir,
		exe:     filepath.Join(dir, "baton"),
		cfgPath: filepath.Join(dir, "baton.toml"),
		control: filepath.Join(dir, "ctl.sock"),
		addr:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
	}
	u.install(t, build)
	u.writeConfig(t, cfg(u.addr, u.control))
	u.proc = start(t, nil, u.exe, "run", "--config", u.cfgPath)
	u.out.wait(reAllReady, 30*time.Second)
	return u
}

// noRaceExitSleep spares a process built with -race the race runtime's
// one-second sleep at exit (a baton handing over, each drained worker,
// each client command), which would otherwise dominate the times measured
// here and the suite's time. A race report still makes the process exit
// 66. Every process the harness starts has it (startFiles).
var noRaceExitSleep = "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")

// hellosUpTo returns a config function for hello workers with the given
// reload.timeout: the default, 60s, unless the test is about it (a
// race-built hello took up to 15 s to start on one loaded CPU).
func hellosUpTo(timeout string) func(addr, control string) string {
	return func(addr, control string) string { return upgradeConfig(addr, control, nil, timeout) }
}

// install replaces baton's executable with a copy of the file from.
func (u *upBaton) install(t testing.TB, from string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	installExe(t, u.exe, b)
}

// installExe puts data at path as a deploy does: written next to it, then
// renamed over it, so the path names a new file (a new inode) and a
// process running the old one is unaffected.
func installExe(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func (u *upBaton) writeConfig(t testing.TB, cfg string) {
	t.Helper()
	tmp := u.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, u.cfgPath); err != nil {
		t.Fatal(err)
	}
}

// ctl runs `baton COMMAND --control ... --timeout 60s` (the shared build:
// the client needs no upgrade) and returns its exit code and its output
// with the trailing newline removed.
func (u *upBaton) ctl(t testing.TB, command string) (int, string) {
	t.Helper()
	p := start(t, nil, bin.baton, command, "--control", u.control, "--timeout", "60s")
	code := p.waitExit(70 * time.Second)
	<-p.out.done
	return code, strings.TrimSuffix(p.out.String(), "\n")
}

// batonState is a settled baton: no reload running, nothing draining.
type batonState struct {
	*control.Stats
	workers    []int // the baton's children: its serving workers
	registered bool  // upBaton.registered then
}

// stats asks whichever baton answers on the control socket for its stats.
func (u *upBaton) stats() (control.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return control.Ask(ctx, u.control, control.Request{Command: "stats"})
}

// settle waits until the baton answering on the control socket runs no
// reload, drains nothing and has exactly its workers as children (a
// successor that just took over, or a failed attempt, is not settled).
func (u *upBaton) settle(t testing.TB) batonState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := u.stats()
		var kids []int
		if err == nil && r.Stats != nil {
			kids = children(r.Stats.PID)
			if st := r.Stats; !st.Reloading && st.Draining == 0 && len(kids) == st.Workers && st.Workers > 0 && allComm(kids, "hello") {
				return batonState{Stats: st, workers: kids, registered: u.registered}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("baton never settled: stats %+v (%v), children %v", r.Stats, err, kids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// children returns pid's children, sorted.
func children(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err == nil && ppid(c) == pid {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// tree returns every live process below pid.
func tree(pid int) []int {
	var out []int
	for queue := []int{pid}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children(queue[0]) {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

func allComm(pids []int, name string) bool {
	for _, p := range pids {
		if comm(p) != name {
			return false
		}
	}
	return true
}

// versionOf returns what `exe version` says its version is.
func versionOf(t testing.TB, exe string) string {
	t.Helper()
	out, err := exec.Command(exe, "version").Output()
	v, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "baton ")
	if err != nil || !ok {
		t.Fatalf("%s version: %q, %v", exe, out, err)
	}
	return v
}

// versions returns the version of bin.baton and of batonNext's build,
// checking they differ: a baton upgraded from one to the other shows which
// executable it runs.
func versions(t testing.TB) (string, string) {
	t.Helper()
	first, second := versionOf(t, bin.baton), versionOf(t, batonNext(t))
	if second != nextVersion || first == second {
		t.Fatalf("versions %q and %q: -ldflags \"-X main.version=%s\" did not set baton's version", first, second, nextVersion)
	}
	return first, second
}

var (
	reUpgradeOK = regexp.MustCompile(`^upgrade ok: baton pid (\d+) serving generation (\d+) with (\d+) workers \((\d+\.\d\d)s\)$`)
	reReloadUp  = regexp.MustCompile(`^reload ok: upgraded to baton pid (\d+), generation (\d+) serving with (\d+) workers \((\d+\.\d\d)s\)$`)
	reTookOver  = regexp.MustCompile(`msg="took over from the previous baton"`)
	reFailed    = regexp.MustCompile(`msg="reload failed; the serving generation stays" err=.*upgrad`)
)

// upgradeBy triggers a self-upgrade of the settled baton before in one of
// three ways, and returns the new baton's pid and what the trigger said.
func (u *upBaton) upgradeBy(t *testing.T, how string, before batonState) (int, string) {
	t.Helper()
	var re *regexp.Regexp
	var code int
	var out string
	switch how {
	case "baton upgrade":
		re = reUpgradeOK
		code, out = u.ctl(t, "upgrade")
	case "baton reload": // with a new executable in place
		re = reReloadUp
		code, out = u.ctl(t, "reload")
	case "SIGUSR2":
		if err := syscall.Kill(before.PID, syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		return u.waitNewPID(t, before.PID), "(no reply)"
	default:
		t.Fatalf("unknown trigger %q", how)
	}
	m := re.FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("%s: exit %d, %q; want exit 0 and a line matching %q", how, code, out, re)
	}
	pid, _ := strconv.Atoi(m[1])
	if gen, _ := strconv.Atoi(m[2]); gen != before.Generation+1 {
		t.Errorf("%s: %q: generation %d, want %d", how, out, gen, before.Generation+1)
	}
	if w, _ := strconv.Atoi(m[3]); w != len(before.workers) {
		t.Errorf("%s: %q: %d workers, want %d", how, out, w, len(before.workers))
	}
	return pid, out
}

// waitNewPID waits until the control socket is answered by a baton other
// than old, and returns its pid.
func (u *upBaton) waitNewPID(t testing.TB, old int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := u.stats()
		if err == nil && r.Stats != nil && r.Stats.PID != old {
			return r.Stats.PID
		}
		if time.Now().After(deadline) {
			t.Fatalf("no other baton than %d answers on %s: %+v, %v", old, u.control, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkUpgraded checks what follows a self-upgrade of the settled baton
// before to newPID (from is the log length before it was triggered): the
// old baton exits 0 once its workers have drained, none of them is left,
// and the new baton serves the next generation with as many new workers,
// runs version, and both said so in the log. It returns the new state.
func (u *upBaton) checkUpgraded(t *testing.T, before batonState, newPID int, version string, from int) batonState {
	t.Helper()
	if newPID == before.PID {
		t.Fatalf("the upgrade kept baton pid %d", newPID)
	}
	u.follow(newPID)
	if how := u.exitOf(before.PID, 40*time.Second); how != "exit status 0" {
		t.Errorf("the old baton (pid %d) ended with %s, want exit status 0", before.PID, how)
	}
	for _, w := range before.workers {
		if processExists(w) {
			t.Errorf("worker %d of the old baton %d is still there (state %s, parent %d) after it exited", w, before.PID, procState(w), ppid(w))
		}
	}
	after := u.settle(t)
	if after.PID != newPID {
		t.Errorf("baton pid %d answers, want the new one %d", after.PID, newPID)
	}
	if after.Generation != before.Generation+1 || after.Workers != before.Workers {
		t.Errorf("after the upgrade: generation %d with %d workers, want %d with %d", after.Generation, after.Workers, before.Generation+1, before.Workers)
	}
	if after.Version != version {
		t.Errorf("the new baton runs version %q, want %q", after.Version, version)
	}
	for _, w := range after.workers {
		if slices.Contains(before.workers, w) {
			t.Errorf("worker %d serves before and after the upgrade", w)
		}
	}
	for _, re := range []string{
		`msg="self-upgrade done, draining this baton's workers"`,
		`msg="self-upgrade done.* new_pid=` + strconv.Itoa(newPID) + `\b`,
		`msg="took over from the previous baton" parent=` + strconv.Itoa(before.PID) + `\b`,
	} {
		u.out.waitFrom(from, regexp.MustCompile(re), 10*time.Second)
	}
	return after
}

// Three self-upgrades of baton under 64 clients in each mode, by `baton
// upgrade`, by SIGUSR2, and by replacing the executable then `baton
// reload`: each time a new executable (another version) is in place, the
// baton pid changes, the old baton exits 0 after draining its workers, the
// new one serves the next generation with new workers and reports the new
// version, and not one request fails.
func TestUpgradeUnderLoad(t *testing.T) {
	first, second := versions(t)
	next := batonNext(t)
	steps := []struct {
		how, exe, version string
	}{
		{"baton upgrade", next, second},
		{"SIGUSR2", bin.baton, first},
		{"baton reload", next, second},
	}
	const clients = 64
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			u := startUpgradable(t, hellosUpTo("60s"))
			st := u.settle(t)
			if st.Version != first {
				t.Fatalf("baton runs version %q, want %q", st.Version, first)
			}
			g := startLoad(t, u.addr, mode, clients)
			for _, s := range steps {
				before := u.settle(t)
				u.install(t, s.exe)
				from := u.out.len()
				begin := time.Now()
				pid, said := u.upgradeBy(t, s.how, before)
				took := time.Since(begin)
				after := u.checkUpgraded(t, before, pid, s.version, from)
				handover := time.Since(begin)
				// Once the old baton has gone, the new workers serve all.
				was := g.Snapshot().PIDs
				waitServed(t, g, 300)
				served := int64(0)
				for p, n := range g.Snapshot().PIDs {
					if w, _ := strconv.Atoi(p); slices.Contains(after.workers, w) {
						served += n - was[p]
					}
				}
				t.Logf("%s: pid %d -> %d, version %s, generation %d; trigger returned after %v (%s), old baton gone after %v; %d of the next 300 answers from the new workers",
					s.how, before.PID, after.PID, after.Version, after.Generation, took.Round(time.Millisecond), said, handover.Round(time.Millisecond), served)
				if served < 300-clients {
					t.Errorf("only %d of 300 answers after the upgrade came from the new workers %v", served, after.workers)
				}
			}
			r := g.Stop()
			t.Logf("3 self-upgrades: %s", r)
			if r.Failed() != 0 {
				t.Errorf("%d requests failed across 3 self-upgrades: %s %v", r.Failed(), r, r.Samples)
			}
			if n := u.out.count(reTookOver); n != len(steps) {
				t.Errorf("%d batons took over, want %d", n, len(steps))
			}
		})
	}
}

// listenerInode returns the inode of the listening TCP socket on addr
// (127.0.0.1:PORT), from /proc/net/tcp.
func listenerInode(t testing.TB, addr string) string {
	t.Helper()
	inodes := listenerInodes(t, addr)
	if len(inodes) == 0 {
		t.Fatalf("no listening socket on %s in /proc/net/tcp", addr)
	}
	return inodes[0]
}

// listenerInodes returns the inodes of every listening TCP socket on addr
// (127.0.0.1:PORT), sorted.
func listenerInodes(t testing.TB, addr string) []string {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	want := fmt.Sprintf("0100007F:%04X", p)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == want && f[3] == "0A" { // 0A: LISTEN
			out = append(out, f[9])
		}
	}
	slices.Sort(out)
	return out
}

// socketFlags returns the file status flags (fdinfo's "flags:", octal) of
// the socket with inode ino as process pid holds it; procRoot is /proc, or
// a container's /proc seen from the host. Every descriptor of one socket
// shares them: they belong to the open file description.
func socketFlags(procRoot string, pid int, ino string) (int, error) {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	ents, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if link, _ := os.Readlink(filepath.Join(dir, "fd", e.Name())); link != "socket:["+ino+"]" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "fdinfo", e.Name()))
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				fl, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				return int(fl), err
			}
		}
		return 0, fmt.Errorf("no flags in %s/fdinfo/%s", dir, e.Name())
	}
	return 0, fmt.Errorf("process %d holds no descriptor of socket %s", pid, ino)
}

// checkNonBlocking checks that every one of pids holds the listener with
// inode ino in non-blocking mode: the Go workers set it so, and nothing
// may turn it back (docs/architecture.md, "baton → worker").
func checkNonBlocking(t testing.TB, procRoot, ino string, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		fl, err := socketFlags(procRoot, pid, ino)
		if err != nil {
			t.Errorf("listener flags of pid %d: %v", pid, err)
		} else if fl&unix.O_NONBLOCK == 0 {
			t.Errorf("pid %d holds the listener in blocking mode (flags 0%o): someone switched the shared socket back, and a Go worker's drain hangs", pid, fl)
		}
	}
}

// idleConns opens n keep-alive connections to addr, does one request on
// each, and returns them by the pid (X-Pid) that answered.
func idleConns(t testing.TB, addr string, n int) map[string][]net.Conn {
	t.Helper()
	out := map[string][]net.Conn{}
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close || br.Buffered() != 0 {
			t.Fatalf("keep-alive request: %s, close %t", resp.Status, resp.Close)
		}
		c.SetDeadline(time.Time{})
		pid := resp.Header.Get("X-Pid")
		out[pid] = append(out[pid], c)
	}
	return out
}

// drainBound is how soon a Go worker with only idle keep-alive clients
// must have drained after SIGTERM: its idle grace (drain.DefaultIdleGrace,
// 1s) and some slack, far below the 20s drain_timeout of upgradeConfig and
// contrib's 30s, where a drain stuck in a blocking accept would end.
const drainBound = 5 * time.Second

// drainedConns checks that each connection was closed by the worker (EOF
// on read), as a drain closes idle keep-alive connections.
func drainedConns(t testing.TB, conns []net.Conn) {
	t.Helper()
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			t.Errorf("idle connection to the drained worker: read %d bytes, %v; want EOF", n, err)
		}
	}
}

// After each of 3 self-upgrades (no load), the shared listener is still
// non-blocking in the new baton and in every worker, and a Go worker of
// the new generation told to drain while keep-alive clients sit idle on
// it exits 0 within drainBound: no process flipped the socket to blocking
// mode (docs/architecture.md, "baton → worker"), which would leave the
// worker's accept blocked in the kernel and its drain hung until
// worker.drain_timeout (20s).
func TestUpgradeKeepsListenerNonBlocking(t *testing.T) {
	first, second := versions(t)
	exes := []struct{ exe, version string }{{batonNext(t), second}, {bin.baton, first}, {batonNext(t), second}}
	// Shared: every worker holds the one listener (under reuseport each
	// has a socket of its own).
	u := startUpgradable(t, func(addr, control string) string {
		return strings.Replace(upgradeConfig(addr, control, nil, "60s"), "[worker]\n", "[worker]\nbalance = \"shared\"\n", 1)
	})
	ino := listenerInode(t, u.addr)
	for i, e := range exes {
		before := u.settle(t)
		checkNonBlocking(t, "/proc", ino, append([]int{before.PID}, before.workers...)...)
		u.install(t, e.exe)
		from := u.out.len()
		pid, _ := u.upgradeBy(t, "baton upgrade", before)
		after := u.checkUpgraded(t, before, pid, e.version, from)
		checkNonBlocking(t, "/proc", ino, append([]int{after.PID}, after.workers...)...)

		conns := idleConns(t, u.addr, 8)
		victim, most := 0, 0
		for p, cs := range conns {
			if w, _ := strconv.Atoi(p); slices.Contains(after.workers, w) && len(cs) > most {
				victim, most = w, len(cs)
			}
		}
		if victim == 0 {
			t.Fatalf("no worker of the new baton (%v) answered: %v", after.workers, conns)
		}
		from = u.out.len()
		begin := time.Now()
		if err := syscall.Kill(victim, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		reExit := regexp.MustCompile(`msg="worker exited" slot=\d+ pid=` + strconv.Itoa(victim) + ` generation=\d+ how=(?:"([^"]*)"|(\S+))`)
		line, _ := u.out.waitFrom(from, reExit, 30*time.Second)
		took := time.Since(begin)
		m := reExit.FindStringSubmatch(line)
		how := m[1] + m[2]
		t.Logf("upgrade %d (pid %d -> %d, version %s): worker %d with %d idle keep-alive clients drained in %v: %s",
			i+1, before.PID, after.PID, after.Version, victim, most, took.Round(time.Millisecond), how)
		if how != "exit status 0" {
			t.Errorf("worker %d ended with %q after SIGTERM, want exit status 0 (drained, not killed)", victim, how)
		}
		if took > drainBound {
			t.Errorf("worker %d took %v to drain %d idle connections, want under %v: its accept did not wake up", victim, took.Round(time.Millisecond), most, drainBound)
		}
		drainedConns(t, conns[strconv.Itoa(victim)])
		// Its replacement, started by the new baton, sees the socket as
		// the others do.
		st := u.settle(t)
		checkNonBlocking(t, "/proc", ino, append([]int{st.PID}, st.workers...)...)
		for _, cs := range conns {
			for _, c := range cs {
				c.Close()
			}
		}
	}
}

// registrations is how many descriptors the upgrader keeps once a
// self-upgrade was tried (it cannot give them back): one per socket
// listening on the address (with reuseport, auto's choice here, every
// socket of the listener's group) and reuseport's dealer's program and
// three maps.
func (u *upBaton) registrations(t testing.TB) int {
	n := len(listenerInodes(t, u.addr))
	if out := u.out.String(); strings.Contains(out, `msg="balance: auto chose reuseport"`) && !strings.Contains(out, "not in turn") {
		n += 4
	}
	return n
}

// checkUnchanged checks that after a failed upgrade the same baton serves
// the same generation with the same workers, and holds no descriptor more
// (a pipe to the failed successor, say).
func (u *upBaton) checkUnchanged(t testing.TB, what string, before batonState) {
	t.Helper()
	after := u.settle(t)
	// The first upgrade registers the listener's sockets with the
	// upgrader, which keeps a copy from then on.
	want := before.FDs
	if !before.registered {
		want += u.registrations(t)
	}
	u.registered = true
	// tableflip's pipes to a failed successor are closed by finalizers
	// after the GC that baton runs then: give them a moment.
	for deadline := time.Now().Add(5 * time.Second); after.FDs != want && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		after = u.settle(t)
	}
	if after.PID != before.PID || after.Generation != before.Generation || !slices.Equal(after.workers, before.workers) {
		t.Errorf("%s: after the failed upgrade baton %d serves generation %d with %v, want %d with %v, as before",
			what, after.PID, after.Generation, after.workers, before.Generation, before.workers)
	}
	if after.FDs != want {
		t.Errorf("%s: baton has %d descriptors open after the failed upgrade, %d before; want %d", what, after.FDs, before.FDs, want)
	}
}

// checkOnlyOld stops g and checks that no request failed and only the
// workers of before answered.
func checkOnlyOld(t testing.TB, what string, g *loadtest.Generator, before batonState) {
	t.Helper()
	r := g.Stop()
	t.Logf("%s: %s", what, r)
	if r.Failed() != 0 {
		t.Errorf("%s: %d requests failed: %s %v", what, r.Failed(), r, r.Samples)
	}
	for p := range r.PIDs {
		if w, _ := strconv.Atoi(p); !slices.Contains(before.workers, w) {
			t.Errorf("%s: pid %s answered; want only the old workers %v", what, p, before.workers)
		}
	}
}

// A new executable that cannot run as baton, (a) garbage bytes, (b) a
// script that exits 1: `baton upgrade` exits 1 and says why, the same
// baton and workers keep serving without one failed request, in both
// modes, and nothing of the attempt is left. A good executable put back
// then upgrades.
func TestUpgradeBrokenBinary(t *testing.T) {
	_, second := versions(t)
	broken := []struct {
		name, data string
		why        string // in the reason baton gives
	}{
		{"garbage", strings.Repeat("\xde\xad\xbe\xef not a program\n", 256), "exec format error"},
		{"script exiting 1", "#!/bin/sh\necho 'this baton is broken' >&2\nexit 1\n", "exit status 1"},
	}
	u := startUpgradable(t, hellosUpTo("60s"))
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			before := u.settle(t)
			g := startLoad(t, u.addr, mode, 32)
			for _, b := range broken {
				installExe(t, u.exe, []byte(b.data))
				from := u.out.len()
				begin := time.Now()
				code, out := u.ctl(t, "upgrade")
				took := time.Since(begin)
				t.Logf("%s: baton upgrade exited %d after %v: %s", b.name, code, took.Round(time.Millisecond), out)
				if reason, ok := strings.CutPrefix(out, "baton upgrade: "); code != 1 || !ok || !strings.Contains(reason, b.why) || strings.Contains(out, "\n") {
					t.Errorf("%s: baton upgrade: exit %d, %q; want exit 1 and one line \"baton upgrade: REASON\" with %q in the reason", b.name, code, out, b.why)
				}
				u.out.waitFrom(from, reFailed, 10*time.Second)
				u.checkUnchanged(t, b.name, before)
				if left := tree(before.PID); !slices.Equal(left, before.workers) {
					t.Errorf("%s: processes under baton after the failed upgrade: %v, want only its workers %v", b.name, left, before.workers)
				}
				waitServed(t, g, 300)
			}
			checkOnlyOld(t, "2 failed upgrades", g, before)
		})
	}
	// A good executable in place: the same baton upgrades.
	before := u.settle(t)
	g := startLoad(t, u.addr, loadtest.PerRequest, 32)
	u.install(t, batonNext(t))
	from := u.out.len()
	pid, said := u.upgradeBy(t, "baton upgrade", before)
	after := u.checkUpgraded(t, before, pid, second, from)
	waitServed(t, g, 300)
	r := g.Stop()
	t.Logf("then a good executable: %s; %s", said, r)
	if r.Failed() != 0 {
		t.Errorf("%d requests failed across the upgrade: %s %v", r.Failed(), r, r.Samples)
	}
	if after.PID == before.PID {
		t.Errorf("baton pid %d unchanged", after.PID)
	}
}

// A successor whose workers never become ready (the config now runs
// `sleep 60` under ready = "notify", reload.timeout 2s): `baton upgrade`
// fails after about 2s and says why; the old baton and its workers serve
// on without one failed request, in both modes, and no process of the
// attempt (the new baton, its workers) is left. With the config fixed, the
// next upgrade works.
func TestUpgradeNewWorkersNeverReady(t *testing.T) {
	const timeout = 2 * time.Second
	_, second := versions(t)
	u := startUpgradable(t, hellosUpTo("60s"))
	reStarted := regexp.MustCompile(`msg="worker started" slot=\d+ pid=(\d+) generation=(\d+)`)
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			before := u.settle(t)
			g := startLoad(t, u.addr, mode, 32)
			u.writeConfig(t, upgradeConfig(u.addr, u.control, []string{"sleep", "60"}, timeout.String()))
			from := u.out.len()
			begin := time.Now()
			client := start(t, nil, bin.baton, "upgrade", "--control", u.control, "--timeout", "60s")
			// Both workers of the attempt start; then everything below
			// the old baton but its own workers is the attempt's.
			at := from
			var started time.Time // the attempt's first worker, by baton's clock
			for i := range 2 {
				var line string
				line, at = u.out.waitFrom(at, reStarted, 20*time.Second)
				if m := reStarted.FindStringSubmatch(line); m[2] != strconv.Itoa(before.Generation+1) {
					t.Fatalf("worker started for generation %s, want the new baton's %d: %s", m[2], before.Generation+1, line)
				}
				if i == 0 {
					started = logTime(t, line)
				}
			}
			var attempt []int
			for _, p := range tree(before.PID) {
				if !slices.Contains(before.workers, p) {
					attempt = append(attempt, p)
				}
			}
			code := client.waitExit(30 * time.Second)
			took := time.Since(begin)
			<-client.out.done
			out := strings.TrimSuffix(client.out.String(), "\n")
			t.Logf("baton upgrade exited %d after %v: %s; the attempt's processes: %v", code, took.Round(time.Millisecond), out, attempt)
			why := "did not become ready within " + timeout.String()
			if reason, ok := strings.CutPrefix(out, "baton upgrade: "); code != 1 || !ok || !strings.Contains(reason, why) || strings.Contains(out, "\n") {
				t.Errorf("baton upgrade: exit %d, %q; want exit 1 and one line \"baton upgrade: REASON\" with %q in the reason", code, out, why)
			}
			if len(attempt) < 3 {
				t.Errorf("the attempt's processes %v: want the new baton and its 2 workers", attempt)
			}
			// Timed on baton's clock from the attempt's workers' start: the
			// client's and the new baton's own starts take seconds of their
			// own on a loaded machine.
			failed, _ := u.out.waitFrom(from, reFailed, 10*time.Second)
			if d := logTime(t, failed).Sub(started); d < timeout || d > timeout+4*time.Second {
				t.Errorf("the upgrade failed %v after its workers started, want about reload.timeout (%v)", d.Round(time.Millisecond), timeout)
			}
			gone := time.Now().Add(5 * time.Second)
			for _, p := range attempt {
				for processExists(p) && time.Now().Before(gone) {
					time.Sleep(10 * time.Millisecond)
				}
				if processExists(p) {
					t.Errorf("process %d (%s, state %s, parent %d) of the failed upgrade is still there", p, comm(p), procState(p), ppid(p))
				}
			}
			u.checkUnchanged(t, "never ready", before)
			waitServed(t, g, 300)
			checkOnlyOld(t, "failed upgrade", g, before)
			u.writeConfig(t, upgradeConfig(u.addr, u.control, nil, timeout.String()))
		})
	}
	before := u.settle(t)
	u.install(t, batonNext(t))
	from := u.out.len()
	pid, said := u.upgradeBy(t, "baton upgrade", before)
	u.checkUpgraded(t, before, pid, second, from)
	t.Logf("with the config fixed: %s", said)
}

// A stop during a self-upgrade cancels it: the new baton gives up, the
// client is told the upgrade was cancelled because baton is stopping (not
// that this baton keeps serving), and the old baton drains and exits 0.
func TestUpgradeCancelledByStop(t *testing.T) {
	u := startUpgradable(t, hellosUpTo("30s"))
	before := u.settle(t)
	u.writeConfig(t, upgradeConfig(u.addr, u.control, []string{"sleep", "60"}, "30s"))
	from := u.out.len()
	client := start(t, nil, bin.baton, "upgrade", "--control", u.control, "--timeout", "60s")
	reStarted := regexp.MustCompile(`msg="worker started" slot=\d+ pid=\d+ generation=` + strconv.Itoa(before.Generation+1))
	u.out.waitFrom(from, reStarted, 20*time.Second)
	syscall.Kill(before.PID, syscall.SIGTERM)
	code := client.waitExit(30 * time.Second)
	<-client.out.done
	out := client.out.String()
	if code != 1 || !strings.Contains(out, "self-upgrade cancelled: baton is stopping") || strings.Contains(out, "keeps serving") {
		t.Errorf("baton upgrade cancelled by a stop: exit %d, %q; want exit 1 saying it was cancelled because baton is stopping", code, out)
	}
	if got := u.exitOf(before.PID, 30*time.Second); got != "exit status 0" {
		t.Errorf("the old baton ended with %s after SIGTERM, want exit status 0", got)
	}
}

// A failed self-upgrade leaves a plain build (no race detector, which
// makes the runtime collect often) no descriptor more than the sockets'
// registrations with the upgrader: the pipe ends tableflip leaves to their
// cleanups are collected at once. Its descriptors are watched from /proc
// alone: a request to baton would allocate, and a collection would then
// hide the leak. A second failed upgrade registers nothing more.
func TestFailedUpgradeLeavesNoDescriptor(t *testing.T) {
	u := startUpgradableOf(t, batonPlain(t), hellosUpTo("60s"))
	pid := u.cmd.Process.Pid
	u.settle(t)
	registrations := u.registrations(t)
	installExe(t, u.exe, []byte("#!/bin/sh\nexit 1\n"))
	before := openFDs(t, pid)
	for i, want := range []int{before + registrations, before + registrations} {
		if code, out := u.ctl(t, "upgrade"); code != 1 || !strings.Contains(out, "exit status 1") {
			t.Fatalf("upgrade %d to a script that exits 1: exit %d: %s", i+1, code, out)
		}
		got := openFDs(t, pid)
		for deadline := time.Now().Add(3 * time.Second); got != want && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			got = openFDs(t, pid)
		}
		if got != want {
			t.Errorf("baton holds %d descriptors after failed upgrade %d, %d before the first; want %d (%d registered)", got, i+1, before, want, registrations)
		}
	}
}
