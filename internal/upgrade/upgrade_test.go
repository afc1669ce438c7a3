package upgrade

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/spawn"
)

// helperEnv set tells a re-executed test binary to play the upgrading
// supervisors instead of running the tests.
const helperEnv = "UPGRADE_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(upgradeHelper())
	}
	os.Exit(m.Run())
}

// childModeEnv tells the successor started by the "upgrade" helper how to
// behave: "ok" (take the socket and be Ready), "exit" (exit 3 at once),
// "fail" (explain, then exit), "hang" (never Ready) or "signal" (wait for
// the parent's SIGTERM, then explain and exit).
const childModeEnv = "HANDOFF_TEST_CHILD"

// upgradeHelper plays both supervisors. The first binds a socket, makes it
// non-blocking (as a Go worker sharing it would), registers it and
// upgrades; its successor (the same binary, started by Upgrade) takes the
// socket and reports what it got. Both write to the same stdout.
func upgradeHelper() int {
	// A successor that waits for SIGTERM must catch it before its pid is
	// known to the parent (NewUpgrader reports it), as baton does.
	term := make(chan os.Signal, 1)
	signal.Notify(term, unix.SIGTERM)
	// A race-built successor may take seconds to start on a loaded
	// machine: only the hung one is timed, and it is killed at 1s.
	timeout := time.Minute
	if os.Getenv(childModeEnv) == "hang" {
		timeout = time.Second
	}
	u, err := NewUpgrader(timeout)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	if !u.HasParent() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fd, err := spawn.DupFd(ln.(*net.TCPListener))
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		if err := u.Add("http", fd); err != nil {
			fmt.Println("error:", err)
			return 1
		}
		if err := u.Ready(); err != nil {
			fmt.Println("error:", err)
			return 1
		}
		if os.Getenv(childModeEnv) == "signal" {
			go func() {
				for !u.Signal(unix.SIGTERM) {
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}
		pid, err := u.Upgrade("addr=" + ln.Addr().String())
		if err != nil {
			fmt.Println("parent: upgrade failed:", err)
			return 1
		}
		fmt.Printf("parent: upgraded to pid %d\n", pid)
		return 0
	}
	switch os.Getenv(childModeEnv) {
	case "exit":
		return 3
	case "fail":
		u.Fail(errors.New("config: bad.toml:3: worker.count: must be positive"))
		return 2
	case "hang":
		time.Sleep(time.Minute) // killed by the parent's timeout
		return 1
	case "signal":
		<-term
		u.Fail(errors.New("stopped by SIGTERM"))
		return 1
	}
	fd, err := u.Take("http")
	if err != nil || fd < 0 {
		fmt.Println("child: take:", fd, err)
		return 1
	}
	missing, err := u.Take("nothing")
	sa, _ := unix.Getsockname(fd)
	flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	fdFlags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	addr := ""
	if in, ok := sa.(*unix.SockaddrInet4); ok {
		addr = fmt.Sprintf("%s:%d", net.IP(in.Addr[:]), in.Port)
	}
	pipeFlags, _ := unix.FcntlInt(4, unix.F_GETFD, 0)
	fmt.Printf("child: pid %d\n", os.Getpid())
	fmt.Printf("child: note %s, took addr=%s nonblock=%v cloexec=%v, missing %d %v, pipe cloexec=%v\n", u.Note(), addr,
		flags&unix.O_NONBLOCK != 0, fdFlags&unix.FD_CLOEXEC != 0, missing, err, pipeFlags&unix.FD_CLOEXEC != 0)
	if err := u.Ready(); err != nil {
		fmt.Println("child: ready:", err)
		return 1
	}
	return 0
}

func runUpgradeHelper(t *testing.T, childMode string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=upgrade", childModeEnv+"="+childMode)
	cmd.Stderr = os.Stderr
	// Output returns once every holder of the pipe, successor included,
	// has closed it.
	out, err := cmd.Output()
	return string(out), err
}

// The successor gets the registered socket under its name, still
// non-blocking (nothing on the way switched its mode), close-on-exec, and
// the parent's note; the parent's Upgrade returns once it is Ready.
func TestUpgradePassesDescriptors(t *testing.T) {
	out, err := runUpgradeHelper(t, "ok")
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var note, took string
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "child: note "); ok {
			note, took, _ = strings.Cut(rest, ", took ")
		}
	}
	addr, ok := strings.CutPrefix(note, "addr=")
	if !ok {
		t.Fatalf("successor got no note:\n%s", out)
	}
	if want := "addr=" + addr + " nonblock=true cloexec=true, missing -1 <nil>, pipe cloexec=true"; took != want {
		t.Errorf("successor took %q, want %q", took, want)
	}
	var pid int
	if _, err := fmt.Sscanf(out[strings.Index(out, "child: pid "):], "child: pid %d", &pid); err != nil {
		t.Fatalf("successor's pid: %v\n%s", err, out)
	}
	if !strings.Contains(out, fmt.Sprintf("parent: upgraded to pid %d\n", pid)) {
		t.Errorf("parent's Upgrade did not succeed with the successor's pid %d:\n%s", pid, out)
	}
}

// A successor that exits, or is not Ready in time, fails the Upgrade; the
// parent learns why.
func TestUpgradeFails(t *testing.T) {
	for mode, want := range map[string]string{
		"exit":   "exit status 3",
		"hang":   "timed out",
		"fail":   "parent: upgrade failed: upgrade: config: bad.toml:3: worker.count: must be positive\n",
		"signal": "parent: upgrade failed: upgrade: stopped by SIGTERM\n",
	} {
		t.Run(mode, func(t *testing.T) {
			start := time.Now()
			out, err := runUpgradeHelper(t, mode)
			if err == nil || !strings.Contains(out, "parent: upgrade failed: upgrade: ") || !strings.Contains(out, want) {
				t.Fatalf("helper: %v, want the upgrade to fail with %q:\n%s", err, want, out)
			}
			if mode == "hang" && time.Since(start) > 30*time.Second {
				t.Errorf("a hung successor was not killed at the 1s timeout (took %s)", time.Since(start))
			}
		})
	}
}
