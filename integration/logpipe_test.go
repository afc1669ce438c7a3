package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/loadtest"
)

// baton's output goes to a pipe another process reads (`baton run 2>&1 |
// cat >log`), and that reader exits. Every line baton writes from then on
// fails with EPIPE: it is dropped and counted, and nothing else changes.
// The service keeps serving through a reload and a killed worker without
// one failed request, and `baton stop` ends it cleanly, leaving no
// socket, no runtime directory and no process. The workers still start
// with SIGPIPE at its default (a disposition set to ignore would be
// inherited across exec).
func TestClosedOutputPipeKeepsServing(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// The reader: cat, reading the pipe; its output is the test's to read.
	reader, read := startFiles(t, []*os.File{pr}, nil, "sh", "-c", `exec cat <&3 3<&-`)
	read()
	pr.Close()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// Each worker first prints which signals a process it starts finds
	// ignored.
	p, readBaton := startFiles(t, []*os.File{pw}, nil, "sh", "-c", `exec "$@" >&3 2>&3 3>&-`, "sh",
		bin.baton, "run", "--listen", "http=tcp://"+addr, "--workers", "2",
		"--", "sh", "-c", `grep SigIgn /proc/self/status >&2; exec "$0"`, bin.hello)
	readBaton()
	pw.Close()
	log := reader.out
	log.wait(reAllReady, 30*time.Second)
	log.waitCount(reSigIgn, 2, 10*time.Second)
	for _, l := range strings.Split(log.String(), "\n") {
		if m := reSigIgn.FindStringSubmatch(l); m != nil {
			mask, _ := strconv.ParseUint(m[1], 16, 64)
			if mask&(1<<(syscall.SIGPIPE-1)) != 0 {
				t.Errorf("a worker starts with SIGPIPE ignored: %s", l)
			}
		}
	}
	control := controlOf(t, reader)
	dir := filepath.Dir(control)

	// The reader goes; baton's output pipe now has no reader.
	syscall.Kill(-reader.cmd.Process.Pid, syscall.SIGKILL)
	reader.waitExit(10 * time.Second)

	g := startLoad(t, addr, loadtest.KeepAlive, 16)
	code, out := ctl(t, "reload", "--control", control, "--timeout", "30s")
	if code != 0 || !strings.Contains(out, "reload ok: generation 2") {
		t.Fatalf("baton reload after its output's reader exited: exit %d: %s", code, out)
	}
	waitServed(t, g, 500)
	r := g.Stop()
	t.Logf("load after the reader exited, through a reload: %s", r)
	if r.Failed() != 0 {
		t.Errorf("%d requests failed: %s %v", r.Failed(), r, r.Samples)
	}
	if st := stats(t, control); st.OutputDrops == 0 {
		t.Errorf("stats count no output dropped after lines met a closed pipe")
	}

	// The case: a worker killed, a line logged, a worker started.
	victim := workerOf(t, control, 0)
	syscall.Kill(victim, syscall.SIGKILL)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if pid := workerOf(t, control, 0); pid != victim && pid != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot 0's worker %d, killed, not replaced within 30s", victim)
		}
	}

	tree := p.descendants()
	code, out = ctl(t, "stop", "--control", control)
	if code != 0 || !strings.Contains(out, "stop ok") {
		t.Errorf("baton stop after its output's reader exited: exit %d: %s", code, out)
	}
	if code := p.waitExit(30 * time.Second); code != 0 {
		t.Errorf("baton exited %d after baton stop, want 0", code)
	}
	for _, path := range []string{control, dir} {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s is still there after baton stopped: %v", path, err)
		}
	}
	for _, pid := range tree {
		if processExists(pid) {
			t.Errorf("process %d (%s) is still there after baton stopped", pid, comm(pid))
		}
	}
}

// workerOf returns the pid of slot's ready worker of the serving
// generation, 0 if none.
func workerOf(t *testing.T, control string, slot int) int {
	t.Helper()
	st := request(t, control, "status").Status
	for _, w := range st.Workers {
		if w.Slot == slot && w.Generation == st.Generation && w.State == "ready" {
			return w.PID
		}
	}
	return 0
}

// reSigIgn matches the line a worker prints about the signals it found
// ignored.
var reSigIgn = regexp.MustCompile(`SigIgn:\s+([0-9a-f]+)`)

// baton started with a child it did not spawn: a shell's `2> >(tee log)`
// forks tee, which reads baton's standard error, then execs baton. That
// child is no worker's: a stop neither signals it nor waits for it, and
// tee passes baton's last line on, then exits on its own once baton has.
func TestStopLeavesAChildFromBeforeBaton(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skipf("bash (for its process substitution) is not installed: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, nil, "bash", "-c", `exec 2> >(exec tee); exec "$@"`, "bash",
		bin.baton, "run", "--listen", "http=tcp://"+addr, "--workers", "2", "--", bin.hello)
	p.out.wait(reAllReady, 30*time.Second)
	control := controlOf(t, p)
	tee := 0
	for _, pid := range p.descendants() {
		if ppid(pid) == p.cmd.Process.Pid && comm(pid) == "tee" {
			tee = pid
		}
	}
	if tee == 0 {
		t.Fatal("baton has no child tee")
	}

	code, out := ctl(t, "stop", "--control", control)
	if code != 0 || !strings.Contains(out, "stop ok") {
		t.Errorf("baton stop: exit %d: %s", code, out)
	}
	if code := p.waitExit(30 * time.Second); code != 0 {
		t.Errorf("baton exited %d after baton stop, want 0", code)
	}
	p.out.wait(regexp.MustCompile(`msg=stopped`), 10*time.Second)
	if n := p.out.count(regexp.MustCompile(`pid=` + strconv.Itoa(tee) + `\b`)); n != 0 {
		t.Errorf("baton's log names tee (pid %d) %d times: it took it for a worker's", tee, n)
	}
	select {
	case <-p.out.done: // tee has closed its output: it has exited
	case <-time.After(10 * time.Second):
		t.Errorf("tee (pid %d, state %s) still running 10s after baton exited", tee, procState(tee))
	}
}
