package integration

import (
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Under systemd-socket-activate the socket comes from outside: baton uses
// it by name (it does not bind) and serves on it.
func TestSystemdSocketActivate(t *testing.T) {
	ssa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is not installed (Debian package systemd): ", err)
	}
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// The config names a different port: serving on addr proves the
	// passed socket was used rather than a new one bound.
	other := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, nil, ssa, "-l", addr, "--fdname=http",
		bin.baton, "run", "--listen", "http=tcp://"+other, "--workers", "2", "--", bin.hello)
	// systemd-socket-activate starts the command on the first connection,
	// which waits in the socket's queue while baton starts: served, not
	// refused.
	p.out.wait(regexp.MustCompile(`Listening on `), 30*time.Second)
	if _, err := getOnce(addr, "/"); err != nil {
		t.Fatalf("first connection, which started baton: %v", err)
	}
	p.out.wait(reAllReady, 30*time.Second)
	pids := map[string]bool{}
	for i := 0; i < 200 && len(pids) < 2; i++ {
		body, err := getOnce(addr, "/")
		if err != nil {
			t.Fatalf("GET on the activated socket: %v", err)
		}
		pids[body] = true
	}
	if len(pids) < 2 {
		t.Errorf("answers came from %v, want 2 workers", pids)
	}
	if _, err := getOnce(other, "/"); err == nil {
		t.Errorf("baton bound its configured address although systemd passed the socket")
	}
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	if code := p.waitExit(30 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// A socket passed by systemd that no listener claims stops baton before it
// starts anything.
func TestSystemdSocketUnclaimed(t *testing.T) {
	ssa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate is not installed (Debian package systemd): ", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, nil, ssa, "-l", addr, "--fdname=admin",
		bin.baton, "run", "--listen", fmt.Sprintf("http=tcp://127.0.0.1:%d", freePort(t)), "--", bin.hello)
	p.out.wait(regexp.MustCompile(`Listening on `), 30*time.Second)
	if c, err := net.Dial("tcp", addr); err == nil { // starts baton
		defer c.Close()
	}
	if code := p.waitExit(30 * time.Second); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(p.out.String(), `systemd passed socket "admin" that no listener claims`) {
		t.Errorf("output does not name the unclaimed socket:\n%s", p.out)
	}
}
