package handoff

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
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperEnv tells a re-executed test binary which helper to run instead of
// the tests, as os/exec's tests do. Other test files of this package add
// their helpers to helpers from an init function.
const helperEnv = "HANDOFF_TEST_HELPER"

// helpers maps a helperEnv value to a function that plays a child process
// and returns its exit code.
var helpers = map[string]func() int{
	"worker": workerHelper,
}

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		h, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
			os.Exit(2)
		}
		os.Exit(h())
	}
	os.Exit(m.Run())
}

// Environment of the "worker" helper, besides LISTEN_*.
const (
	// keepPIDEnv set: leave LISTEN_PID as the parent set it. Unset: the
	// helper sets it to its own pid first, as baton's exec shim does.
	keepPIDEnv = "HANDOFF_TEST_KEEP_PID"
	// lookupEnv: comma-separated names to look up with Listener and
	// PacketConn, each reported on one line.
	lookupEnv = "HANDOFF_TEST_LOOKUP"
	// serveEnv set: after "ready", answer one connection on every listener
	// and one datagram on every packet conn with the socket's name.
	serveEnv = "HANDOFF_TEST_SERVE"
)

// workerHelper is a socket-activated worker. It reports what the
// worker-side API returns, one fact per line, then "ready", then serves if
// asked to.
func workerHelper() int {
	if os.Getenv(keepPIDEnv) == "" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	ls, lerr := Listeners()
	pcs, perr := PacketConns()
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	report := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	if lerr != nil {
		report("listeners error: %v", lerr)
		report("is ErrNoListeners: %t", errors.Is(lerr, ErrNoListeners))
	} else {
		report("listeners: %s", describe(ls, net.Listener.Addr))
	}
	if perr != nil {
		report("packets error: %v", perr)
	} else {
		report("packets: %s", describe(pcs, net.PacketConn.LocalAddr))
	}
	// Listeners must have consumed the variables: a child of this worker
	// must not believe the sockets are meant for it.
	report("env: LISTEN_FDS=%q LISTEN_FDNAMES=%q LISTEN_PID=%q",
		os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"), os.Getenv("LISTEN_PID"))
	// The sockets this process holds, whether it may leak them to a child.
	report("sockets: %s", socketFds())
	// A second call returns the very same sockets.
	if again, err := Listeners(); err == nil {
		for name, l := range again {
			if ls[name] != l {
				report("second call: %q differs", name)
			}
		}
	}
	for name := range strings.SplitSeq(os.Getenv(lookupEnv), ",") {
		if name == "" {
			continue
		}
		if _, err := Listener(name); err != nil {
			report("Listener(%q): %v", name, err)
		} else {
			report("Listener(%q): ok", name)
		}
		if _, err := PacketConn(name); err != nil {
			report("PacketConn(%q): %v", name, err)
		} else {
			report("PacketConn(%q): ok", name)
		}
	}
	report("ready")
	out.Flush()
	if os.Getenv(serveEnv) == "" {
		return 0
	}

	var wg sync.WaitGroup
	for name, l := range ls {
		wg.Go(func() {
			c, err := l.Accept()
			if err != nil {
				fmt.Fprintf(os.Stderr, "accept %q: %v\n", name, err)
				return
			}
			io.WriteString(c, name+"\n")
			c.Close()
		})
	}
	for name, pc := range pcs {
		wg.Go(func() {
			buf := make([]byte, 64)
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				fmt.Fprintf(os.Stderr, "read %q: %v\n", name, err)
				return
			}
			pc.WriteTo([]byte(name), from)
		})
	}
	wg.Wait()
	return 0
}

// describe lists "name=network" for each socket, sorted by name.
func describe[V any](m map[string]V, addr func(V) net.Addr) string {
	var s []string
	for name, v := range m {
		s = append(s, name+"="+addr(v).Network())
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}

// socketFds describes the socket descriptors of this process: how many, and
// whether all of them are close-on-exec.
func socketFds() string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err.Error()
	}
	n, cloexec := 0, true
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || !strings.HasPrefix(target, "socket:") {
			continue
		}
		n++
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
			cloexec = false
		}
	}
	return fmt.Sprintf("%d cloexec=%t", n, cloexec)
}

// child is a running worker helper.
type child struct {
	cmd   *exec.Cmd
	lines []string // its report, up to "ready"
}

// startWorker starts the worker helper with files at descriptors 3, 4, ...
// and env added to its environment, and reads its report up to "ready". The
// child is killed and waited for when the test ends.
func startWorker(t *testing.T, files []*os.File, env ...string) *child {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(withoutListenVars(os.Environ()), helperEnv+"=worker",
		// Spare a child built with -race the race runtime's 1s sleep at exit.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	cmd.Stderr = testWriter{t}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel() // kills the child if it is still running
		cmd.Wait()
	})
	c := &child{cmd: cmd}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if sc.Text() == "ready" {
			return c
		}
		c.lines = append(c.lines, sc.Text())
	}
	t.Fatalf("worker ended before reporting ready (%v); it said:\n%s", sc.Err(), strings.Join(c.lines, "\n"))
	return nil
}

// wait waits for the child to exit and fails the test unless it exited 0.
func (c *child) wait(t *testing.T) {
	t.Helper()
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("worker: %v", err)
	}
}

// withoutListenVars drops socket-activation variables the test itself may
// have been started with.
func withoutListenVars(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, helperEnv+"=")
	})
}

// testWriter sends a child's stderr to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("worker stderr: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// fileOf returns a duplicate of a socket's descriptor to pass to a child.
func fileOf(t *testing.T, s interface{ File() (*os.File, error) }) *os.File {
	t.Helper()
	f, err := s.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// wantLines fails the test unless got contains every line of want.
func wantLines(t *testing.T, got []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("worker did not report %q; it said:\n%s", w, strings.Join(got, "\n"))
		}
	}
}

// TestListenersByName passes four sockets of three kinds and checks that
// each name reaches the socket of that name: the worker answers a connection
// or datagram on each with the name it found the socket under.
func TestListenersByName(t *testing.T) {
	lc := net.ListenConfig{}
	ctx := context.Background()
	http, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := lc.Listen(ctx, "unix", filepath.Join(t.TempDir(), "ctl.sock"))
	if err != nil {
		t.Fatal(err)
	}
	dns, err := lc.ListenPacket(ctx, "udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	files := []*os.File{
		fileOf(t, http.(*net.TCPListener)),
		fileOf(t, dns.(*net.UDPConn)),
		fileOf(t, admin.(*net.TCPListener)),
		fileOf(t, ctl.(*net.UnixListener)),
	}
	c := startWorker(t, files,
		"LISTEN_FDS=4", "LISTEN_FDNAMES=http:dns:admin:ctl",
		lookupEnv+"=http,dns,nope", serveEnv+"=1")
	// The child holds the sockets now; close this process's copies so only
	// the child can answer.
	for _, f := range files {
		f.Close()
	}
	ctl.(*net.UnixListener).SetUnlinkOnClose(false)
	for _, s := range []io.Closer{http, admin, ctl, dns} {
		s.Close()
	}

	wantLines(t, c.lines,
		"listeners: admin=tcp ctl=unix http=tcp",
		"packets: dns=udp",
		`env: LISTEN_FDS="" LISTEN_FDNAMES="" LISTEN_PID=""`,
		"sockets: 4 cloexec=true", // the inherited descriptors were closed after conversion
		`Listener("http"): ok`,
		`PacketConn("http"): handoff: "http" is a stream listener, not a datagram socket (use Listener)`,
		`Listener("dns"): handoff: "dns" is a datagram socket, not a listener (use PacketConn)`,
		`PacketConn("dns"): ok`,
		`Listener("nope"): handoff: no listener named "nope" (have "admin", "ctl", "http")`,
		`PacketConn("nope"): handoff: no datagram socket named "nope" (have "dns")`,
	)

	for _, tc := range []struct{ name, network, addr string }{
		{"http", "tcp", http.Addr().String()},
		{"admin", "tcp", admin.Addr().String()},
		{"ctl", "unix", ctl.Addr().String()},
	} {
		conn, err := net.DialTimeout(tc.network, tc.addr, 10*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", tc.name, err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(conn)
		conn.Close()
		if err != nil {
			t.Fatalf("read from %s: %v", tc.name, err)
		}
		if string(got) != tc.name+"\n" {
			t.Errorf("socket passed as %q answered as %q", tc.name, strings.TrimSpace(string(got)))
		}
	}

	conn, err := net.Dial("udp", dns.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("read from dns: %v", err)
	}
	if got := string(buf[:n]); got != "dns" {
		t.Errorf("datagram socket passed as \"dns\" answered as %q", got)
	}
	c.wait(t)
}

// TestListenersErrors covers what the worker gets when the environment is
// missing, meant for someone else, or describes descriptors it cannot use.
func TestListenersErrors(t *testing.T) {
	tcp := func(t *testing.T) *os.File {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return fileOf(t, l.(*net.TCPListener))
	}
	pipe := func(t *testing.T) *os.File {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		return r
	}
	connected := func(t *testing.T) *os.File {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return fileOf(t, c.(*net.TCPConn))
	}
	type mkfile func(t *testing.T) *os.File

	tests := []struct {
		name  string
		files []mkfile
		env   []string
		want  []string
	}{{
		name: "nothing passed",
		want: []string{
			"listeners error: handoff: no inherited listeners (LISTEN_FDS unset)",
			"is ErrNoListeners: true",
			"packets error: handoff: no inherited listeners (LISTEN_FDS unset)",
			`Listener("http"): handoff: no inherited listeners (LISTEN_FDS unset)`,
			"sockets: 0 cloexec=true",
		},
	}, {
		name:  "another process's sockets",
		files: []mkfile{tcp},
		env:   []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http", "LISTEN_PID=1", keepPIDEnv + "=1"},
		want: []string{
			`is ErrNoListeners: true`,
			`env: LISTEN_FDS="" LISTEN_FDNAMES="" LISTEN_PID=""`,
			// Not ours, so not touched: still open, still inheritable.
			"sockets: 1 cloexec=false",
		},
	}, {
		name:  "unnamed",
		files: []mkfile{tcp, tcp},
		env:   []string{"LISTEN_FDS=2"},
		want: []string{
			"listeners: LISTEN_FD_3=tcp LISTEN_FD_4=tcp",
			`Listener("http"): handoff: no listener named "http" (have "LISTEN_FD_3", "LISTEN_FD_4")`,
		},
	}, {
		name:  "same name twice",
		files: []mkfile{tcp, tcp},
		env:   []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=http:http"},
		want: []string{
			`listeners error: handoff: descriptors 3 and 4 are both named "http": give each socket its own name`,
			"is ErrNoListeners: false",
			"sockets: 0 cloexec=true",
		},
	}, {
		name:  "not a socket",
		files: []mkfile{tcp, pipe},
		env:   []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=http:fifo"},
		want: []string{
			`listeners error: handoff: inherited descriptor 4 "fifo": not a socket: getsockopt SO_TYPE: socket operation on non-socket`,
			"sockets: 0 cloexec=true",
		},
	}, {
		name:  "connection, not listener",
		files: []mkfile{connected},
		env:   []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=conn"},
		want: []string{
			`listeners error: handoff: inherited descriptor 3 "conn": stream socket is not listening`,
			"sockets: 0 cloexec=true",
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var files []*os.File
			for _, mk := range tc.files {
				files = append(files, mk(t))
			}
			env := append([]string{lookupEnv + "=http"}, tc.env...)
			c := startWorker(t, files, env...)
			for _, f := range files {
				f.Close()
			}
			wantLines(t, c.lines, tc.want...)
			c.wait(t)
		})
	}
}
