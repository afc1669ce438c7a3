package integration

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A worker that leaves an orphan behind ((cmd &) in a shell) has it
// re-parented to baton, as child subreaper or as PID 1 of a PID namespace;
// baton reaps it, so no zombie is left. As PID 1 baton also serves and
// stops cleanly. The orphan lives until the test ends it, so the test sees
// it however slowly the workers start.
func TestOrphansAreReaped(t *testing.T) {
	worker := `(sleep 3600 &); exec "$0"`
	t.Run("subreaper", func(t *testing.T) {
		b := startBaton(t, "--workers", "1", "--", "sh", "-c", worker, bin.hello)
		checkOrphansReaped(t, b.proc, b.cmd.Process.Pid, 1)
	})
	t.Run("pid1", func(t *testing.T) {
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			t.Skip("unshare is not installed (Debian package util-linux): ", err)
		}
		port := freePort(t)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		p := start(t, nil, unshare, "--pid", "--fork", "--mount-proc", "--kill-child",
			bin.baton, "run", "--listen", "http=tcp://"+addr, "--workers", "2", "--", "sh", "-c", worker, bin.hello)
		p.out.wait(reAllReady, 30*time.Second)
		var batonPid int
		for _, pid := range p.descendants() {
			if comm(pid) == "baton" {
				batonPid = pid
			}
		}
		if batonPid == 0 {
			t.Fatal("baton not found under unshare")
		}
		if ns := nsPid(batonPid); ns != 1 {
			t.Fatalf("baton is pid %d in its namespace, want 1", ns)
		}
		if _, err := getOnce(addr, "/"); err != nil {
			t.Fatalf("baton as PID 1 does not serve: %v", err)
		}
		checkOrphansReaped(t, p, batonPid, 2)
		syscall.Kill(batonPid, syscall.SIGTERM)
		if code := p.waitExit(30 * time.Second); code != 0 {
			t.Errorf("unshare exited %d after SIGTERM to baton as PID 1, want 0", code)
		}
	})
}

// checkOrphansReaped waits until n sleeps are re-parented to parent, ends
// them, and waits until each is gone from /proc: reaped, not a zombie.
func checkOrphansReaped(t *testing.T, p *proc, parent, n int) {
	t.Helper()
	var orphans []int
	deadline := time.Now().Add(30 * time.Second)
	for len(orphans) < n {
		orphans = orphans[:0]
		for _, pid := range p.descendants() {
			if comm(pid) == "sleep" && ppid(pid) == parent {
				orphans = append(orphans, pid)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d orphaned sleeps were re-parented to baton", len(orphans), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	starts := map[int]string{}
	for _, pid := range orphans {
		starts[pid] = startTime(pid)
		syscall.Kill(pid, syscall.SIGTERM)
	}
	for _, pid := range orphans {
		for processExists(pid) && startTime(pid) == starts[pid] {
			if time.Now().After(deadline) {
				t.Fatalf("orphan %d still in /proc (state %s): not reaped", pid, procState(pid))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// nsPid returns a process's pid in its own (innermost) PID namespace.
func nsPid(pid int) int {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	return 0
}

func procState(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return "?"
}
