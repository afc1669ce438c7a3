package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/drain"
	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/internal/spawn"
	"github.com/batonhq/baton/internal/systemd"
)

// reusePortSocket is a blocking listening socket on 127.0.0.1:0 as systemd
// binds one with ReusePort=yes (on), or without.
func reusePortSocket(t *testing.T, on bool) (fd int, port int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if on {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	return fd, sa.(*unix.SockaddrInet4).Port
}

// listening counts the listening TCP sockets on port, from /proc/net/tcp.
func listening(t *testing.T, port int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	local := fmt.Sprintf(":%04X ", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1]+" ", local) && f[3] == "0A" {
			n++
		}
	}
	return n
}

// With reuseport, a socket systemd passed is the first worker's and baton
// binds the others' beside it; after a scale down new connections go to
// the workers that stay only, and status says the mode.
func TestReusePortBesideInherited(t *testing.T) {
	fd, port := reusePortSocket(t, true)
	cfg := testConfig("serve", 3, func(c *config.Config) {
		c.Listen[0].Address = fmt.Sprintf("tcp://127.0.0.1:%d", port)
		c.Worker.Balance = config.BalanceReusePort
	})
	dir := t.TempDir()
	runUntilReadyIn(t, cfg, []systemd.Socket{{Name: "http", Fd: fd}}, dir, nil)
	if n := listening(t, port); n != 3 {
		t.Errorf("%d sockets listen on port %d, want 3 (one per worker)", n, port)
	}
	slots := map[string]bool{}
	for deadline := time.Now().Add(10 * time.Second); len(slots) < 3 && time.Now().Before(deadline); {
		f := strings.Fields(get(t, fmt.Sprintf("127.0.0.1:%d", port)))
		slots[f[9]] = true // "... slot N ..."
	}
	if len(slots) != 3 {
		t.Errorf("answers came from slots %v, want all 3", slots)
	}
	ctl := filepath.Join(dir, control.SocketName)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := control.Ask(ctx, ctl, control.Request{Command: "status"})
	if err != nil || resp.Status == nil || resp.Status.Balance != config.BalanceReusePort {
		t.Fatalf("status: %+v, %v; want balance %q", resp.Status, err, config.BalanceReusePort)
	}
	if resp, err := control.Ask(ctx, ctl, control.Request{Command: "scale", Workers: "1"}); err != nil || !resp.OK {
		t.Fatalf("scale 1: %+v, %v", resp, err)
	}
	// The answer comes within the step that steers new connections to
	// slot 0's socket alone; the others stay, held by baton for the next
	// workers, and receive nothing.
	for range 30 {
		if f := strings.Fields(get(t, fmt.Sprintf("127.0.0.1:%d", port))); f[9] != "0" {
			t.Fatalf("after scale 1, an answer came from slot %s, want 0", f[9])
		}
	}
	if n := listening(t, port); n != 3 {
		t.Errorf("after scale 1, %d sockets listen on port %d, want the 3 baton holds", n, port)
	}
}

// A socket systemd bound without SO_REUSEPORT cannot have siblings:
// reuseport is refused, saying what to change.
func TestReusePortNeedsReusePortFromSystemd(t *testing.T) {
	fd, port := reusePortSocket(t, false)
	cfg := testConfig("serve", 2, func(c *config.Config) {
		c.Listen[0].Address = fmt.Sprintf("tcp://127.0.0.1:%d", port)
		c.Worker.Balance = config.BalanceReusePort
	})
	err := Run(context.Background(), cfg, Options{
		Logger:     slog.New(slog.NewTextHandler(tlogWriter{t}, nil)),
		RuntimeDir: t.TempDir(),
		Notify:     func(string) error { return nil },
		Inherited:  []systemd.Socket{{Name: "http", Fd: fd}},
	})
	if err == nil || !strings.Contains(err.Error(), "set ReusePort=yes in its .socket unit") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Run = %v, want one line saying to set ReusePort=yes", err)
	}
}

// Sockets baton binds itself in reuseport mode allow siblings; in shared
// mode there is one socket, whatever the count.
func TestReusePortSelfBound(t *testing.T) {
	for _, tt := range []struct {
		balance string
		want    int
	}{{config.BalanceShared, 1}, {config.BalanceReusePort, 2}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		cfg := testConfig("serve", 2, func(c *config.Config) {
			c.Listen[0].Address = fmt.Sprintf("tcp://127.0.0.1:%d", port)
			c.Worker.Balance = tt.balance
		})
		t.Run(tt.balance, func(t *testing.T) {
			runUntilReadyIn(t, cfg, []systemd.Socket{}, t.TempDir(), nil)
			if n := listening(t, port); n != tt.want {
				t.Errorf("%d sockets listen on port %d, want %d", n, port, tt.want)
			}
		})
	}
}

// auto, the default: reuseport on the sockets baton binds and on one
// systemd bound with ReusePort=yes, shared on one systemd bound without;
// the choice is logged in one line and shown by status.
func TestAutoBalance(t *testing.T) {
	for _, tt := range []struct {
		name      string
		inherited int // 0: baton binds; else 1 with SO_REUSEPORT, -1 without
		mode      string
		sockets   int
		why       string
	}{
		{"self-bound", 0, config.BalanceReusePort, 2, "every TCP listener can have a socket per worker"},
		{"systemd ReusePort=yes", 1, config.BalanceReusePort, 2, "every TCP listener can have a socket per worker"},
		{"systemd without", -1, config.BalanceShared, 1, `listener "http" came from systemd without SO_REUSEPORT (set ReusePort=yes in its .socket unit)`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var port int
			inherited := []systemd.Socket{}
			if tt.inherited == 0 {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				port = ln.Addr().(*net.TCPAddr).Port
				ln.Close()
			} else {
				var fd int
				fd, port = reusePortSocket(t, tt.inherited > 0)
				inherited = append(inherited, systemd.Socket{Name: "http", Fd: fd})
			}
			cfg := testConfig("serve", 2, func(c *config.Config) { c.Listen[0].Address = fmt.Sprintf("tcp://127.0.0.1:%d", port) })
			if cfg.Worker.Balance != config.BalanceAuto {
				t.Fatalf("worker.balance defaults to %q, want auto", cfg.Worker.Balance)
			}
			dir := t.TempDir()
			var out syncBuffer
			runUntilReadyIn(t, cfg, inherited, dir, &out)
			if n := listening(t, port); n != tt.sockets {
				t.Errorf("%d sockets listen on port %d, want %d", n, port, tt.sockets)
			}
			line := fmt.Sprintf("msg=\"balance: auto chose %s\" why=%q", tt.mode, tt.why)
			if n := strings.Count(out.String(), "balance: auto chose"); n != 1 || !strings.Contains(out.String(), line) {
				t.Errorf("the log does not say once: %s\n%s", line, out.String())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := control.Ask(ctx, filepath.Join(dir, control.SocketName), control.Request{Command: "status"})
			if err != nil || resp.Status == nil || resp.Status.Balance != tt.mode || resp.Status.BalanceAuto != tt.why {
				t.Fatalf("status: %+v, %v; want balance %q because %q", resp.Status, err, tt.mode, tt.why)
			}
		})
	}
}

// What auto learns of a socket that was open before baton started: its
// kind, SO_REUSEPORT, and whether this user may bind beside it (the
// kernel lets only the socket's owner into its group).
func TestProbeSocket(t *testing.T) {
	fd, _ := reusePortSocket(t, true)
	defer unix.Close(fd)
	if kind, on, beside := probeSocket(fd); kind != "tcp" || !on || beside != "" {
		t.Errorf("SO_REUSEPORT socket: %s, %v, %q; want tcp, true, none", kind, on, beside)
	}
	plain, _ := reusePortSocket(t, false)
	defer unix.Close(plain)
	if kind, on, _ := probeSocket(plain); kind != "tcp" || on {
		t.Errorf("plain socket: %s, %v; want tcp, false", kind, on)
	}
	ul, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	ufd, err := spawn.DupFd(ul.(*net.UnixListener))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ufd)
	if kind, _, _ := probeSocket(ufd); kind != "unix" {
		t.Errorf("unix socket: %s", kind)
	}
	if m, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_MPTCP); err == nil {
		if kind, _, _ := probeSocket(m); kind != "mptcp" {
			t.Errorf("MPTCP socket: %s", kind)
		}
		unix.Close(m)
	}
	if os.Geteuid() != 0 {
		t.Skip("a socket of another user needs root to make")
	}
	// Made as uid 65534 (the file system uid, which the kernel takes for
	// a socket's owner, on a thread of its own that ends with it).
	made := make(chan int)
	go func() {
		runtime.LockOSThread()
		unix.Setfsuid(65534)
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = errors.Join(unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1),
				unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}), unix.Listen(fd, 8))
		}
		if err != nil {
			fd = -1
		}
		made <- fd
	}()
	other := <-made
	if other < 0 {
		t.Fatal("cannot make a socket as uid 65534")
	}
	defer unix.Close(other)
	if _, on, beside := probeSocket(other); !on || !strings.Contains(beside, "address already in use") {
		t.Errorf("another user's SO_REUSEPORT socket: %v, %q; want a bind refused", on, beside)
	}
	if n := listeningAt(t, other); n != 1 {
		t.Errorf("%d sockets listen where the probe bound, want the one", n)
	}
}

// listeningAt counts the sockets listening where fd is bound.
func listeningAt(t *testing.T, fd int) int {
	t.Helper()
	sa, _ := unix.Getsockname(fd)
	return listening(t, sa.(*unix.SockaddrInet4).Port)
}

// A listener baton binds with SO_REUSEPORT where another process of its
// user listens with SO_REUSEPORT would join that one's group: the start
// is refused as without SO_REUSEPORT, and the other keeps its group.
func TestReusePortRefusesAnothersGroup(t *testing.T) {
	fd, port := reusePortSocket(t, true)
	defer unix.Close(fd)
	cfg := testConfig("serve", 2, func(c *config.Config) { c.Listen[0].Address = fmt.Sprintf("tcp://127.0.0.1:%d", port) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // a baton that started stops
	defer cancel()
	err := runAlone(ctx, t, cfg)
	want := fmt.Sprintf(`supervisor: listener "http": listen tcp 127.0.0.1:%d: address already in use (another process listens there with SO_REUSEPORT)`, port)
	if err == nil || err.Error() != want {
		t.Fatalf("Run = %v, want %s", err, want)
	}
	if n := listening(t, port); n != 1 {
		t.Errorf("%d sockets listen on port %d, want the other process's alone", n, port)
	}
}

// With round-robin, baton accepts on the socket systemd passed and the
// workers get its connections; once baton has stopped the socket is
// blocking again, as systemd handed it over, for whichever baton comes
// next (a shared-mode one would hand it to blocking workers).
func TestRoundRobinLeavesSocketBlocking(t *testing.T) {
	fd, port := reusePortSocket(t, false)
	keep, err := unix.Dup(fd) // what systemd keeps
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(keep)
	cfg := testConfig("handoff", 2, func(c *config.Config) {
		c.Listen[0].Address = fmt.Sprintf("tcp://127.0.0.1:%d", port)
		c.Worker.Balance = config.BalanceRoundRobin
	})
	t.Run("serve", func(t *testing.T) {
		runUntilReady(t, cfg, []systemd.Socket{{Name: "http", Fd: fd}})
		pids := map[string]bool{}
		for range 4 {
			pids[strings.Fields(get(t, fmt.Sprintf("127.0.0.1:%d", port)))[1]] = true
		}
		if len(pids) != 2 {
			t.Errorf("4 connections went to workers %v, want both, in turn", pids)
		}
		if fl, _ := unix.FcntlInt(uintptr(keep), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
			t.Error("the socket is blocking while baton accepts on it")
		}
	})
	if fl, _ := unix.FcntlInt(uintptr(keep), unix.F_GETFL, 0); fl&unix.O_NONBLOCK != 0 {
		t.Error("the socket is still non-blocking after baton stopped")
	}
}

// With reuseport, baton warns when the kernel would reset what waits in
// the queue of a slot that goes, and not when it would move it: with the
// classic program, as tcp_migrate_req says; with the dealer, which moves
// it, never.
func TestReusePortWarnsWithoutMigrateReq(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tcp_migrate_req")
	was := migrateReqPath
	migrateReqPath = path
	t.Cleanup(func() { migrateReqPath = was })
	run := func(t *testing.T, value string) string {
		if err := os.WriteFile(path, []byte(value+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		fd, port := reusePortSocket(t, true)
		cfg := testConfig("serve", 2, func(c *config.Config) {
			c.Listen[0].Address = fmt.Sprintf("tcp://127.0.0.1:%d", port)
			c.Worker.Balance = config.BalanceReusePort
		})
		var out syncBuffer
		runUntilReadyIn(t, cfg, []systemd.Socket{{Name: "http", Fd: fd}}, t.TempDir(), &out)
		return out.String()
	}
	for _, value := range []string{"0", "1"} {
		t.Run("random/"+value, func(t *testing.T) {
			dealInTurn = false
			t.Cleanup(func() { dealInTurn = true })
			out := run(t, value)
			warned := strings.Contains(out, "net.ipv4.tcp_migrate_req is 0")
			if warned != (value == "0") {
				t.Errorf("tcp_migrate_req %s: warned %v", value, warned)
			}
			if !strings.Contains(out, "connections are spread at random, not in turn") {
				t.Error("no warning that connections are spread at random")
			}
		})
	}
	t.Run("dealt/0", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("the dealer needs CAP_BPF: run as root")
		}
		if out := run(t, "0"); strings.Contains(out, "tcp_migrate_req") || strings.Contains(out, "at random") {
			t.Errorf("baton warned though its dealer moves a closed socket's queue:\n%s", out)
		}
	})
}

// ready = "fd": a worker that writes a line to $BATON_READY_FD is ready,
// a Go worker or a shell script alike; one that writes nothing fails the
// start, saying what baton waited for.
func TestReadyFD(t *testing.T) {
	t.Run("go", func(t *testing.T) {
		h := startHarness(t, testConfig("fd-ready", 2, func(c *config.Config) { c.Worker.Ready = config.ReadyFD }))
		h.waitNote("READY=1")
		if st := h.stats(); st.Workers != 2 || st.Generation != 1 {
			t.Errorf("stats %+v, want generation 1 with 2 workers", st)
		}
	})
	shell := func(script string, mutate func(*config.Config)) *config.Config {
		return testConfig("serve", 1, func(c *config.Config) {
			c.Listen[0].Address = "tcp://127.0.0.1:0"
			c.Worker.Command = []string{"sh", "-c", script}
			c.Worker.Ready = config.ReadyFD
			if mutate != nil {
				mutate(c)
			}
		})
	}
	t.Run("shell", func(t *testing.T) {
		runUntilReady(t, shell(`printf '\n' >&"$BATON_READY_FD"; exec sleep 600`, nil), []systemd.Socket{})
	})
	t.Run("never", func(t *testing.T) {
		err := runAlone(context.Background(), t, shell("exec sleep 600", func(c *config.Config) { c.Reload.Timeout = config.Duration(500 * time.Millisecond) }))
		if err == nil || !strings.Contains(err.Error(), "did not become ready within 500ms: baton waits for a line on the descriptor BATON_READY_FD names") {
			t.Fatalf("Run = %v, want the start to fail saying what baton waited for", err)
		}
	})
}

// What the drain package says with READY=1 is what baton looks for.
func TestDrainsAcceptedKeyIsDrains(t *testing.T) {
	if want := drainsAcceptedKey + "=1"; drain.DrainsAcceptedField != want {
		t.Errorf("drain says %q, baton looks for %q", drain.DrainsAcceptedField, want)
	}
}
