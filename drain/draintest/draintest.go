// Package draintest runs worker processes of any language the way baton and
// systemd run them, to test that they drain without failing a request.
//
// Start launches a worker with shared listening sockets at descriptors 3,
// 4, ... and LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID set; Listen makes
// such a socket and keeps the test's own copy open, as the supervisor keeps
// its copy. NotifySocket receives what workers send to $NOTIFY_SOCKET.
// DrainUnderLoad is the check itself: two workers on one socket, clients
// that never retry, SIGTERM to one of them, no failed request.
package draintest

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/loadtest"
)

// EventTimeout bounds every wait for an event; reaching it fails the test.
const EventTimeout = 30 * time.Second

// Socket is a descriptor of the test process to pass to a worker by name.
type Socket struct {
	Name string // "" passes it without a name (LISTEN_FDNAMES unset)
	Fd   int
}

// Listen returns a TCP listener on 127.0.0.1 and a socket to pass to
// workers: a close-on-exec duplicate of its descriptor. Both are closed
// when the test ends; the listener is never used to accept.
func Listen(t testing.TB, name string) (*net.TCPListener, Socket) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener), Socket{Name: name, Fd: dup(t, ln.(*net.TCPListener))}
}

// ListenUDP is Listen for a UDP socket on 127.0.0.1: the test's copy is
// never read from.
func ListenUDP(t testing.TB, name string) (*net.UDPConn, Socket) {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc, Socket{Name: name, Fd: dup(t, pc)}
}

// ListenUnix is Listen for a unix stream socket at path.
func ListenUnix(t testing.TB, path, name string) (*net.UnixListener, Socket) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.UnixListener), Socket{Name: name, Fd: dup(t, ln.(*net.UnixListener))}
}

// dup returns a close-on-exec duplicate of ln's descriptor, closed when
// the test ends. Through SyscallConn, never Fd, which would make the
// socket blocking for every process sharing it.
func dup(t testing.TB, ln syscall.Conn) int {
	t.Helper()
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd, serr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, serr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 3) }); err != nil || serr != nil {
		t.Fatalf("dup listener: %v %v", err, serr)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// Accepted waits, up to EventTimeout, until no connection waits in ln's
// accept queue: the worker has taken every connection made so far. A test
// that expects the worker to close a silent connection must know it took
// it: one left in the queue when the worker stops accepting stays open as
// long as ln does.
func Accepted(t testing.TB, ln *net.TCPListener) {
	t.Helper()
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(EventTimeout); ; time.Sleep(time.Millisecond) {
		var queued uint32
		var qerr error
		if err := rc.Control(func(fd uintptr) {
			// For a listening socket, the accept queue's length.
			ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			if err == nil {
				queued = ti.Unacked
			}
			qerr = err
		}); err != nil || qerr != nil {
			t.Fatalf("accept queue of %s: %v %v", ln.Addr(), err, qerr)
		}
		if queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still wait in the accept queue of %s after %s", queued, ln.Addr(), EventTimeout)
		}
	}
}

// Worker is a running worker process.
type Worker struct {
	Pid    int
	lines  chan string // its stdout and stderr, line by line; closed at EOF
	exited chan int    // its exit status, once
}

// Start starts argv with sockets at descriptors 3, 4, ... and the
// socket-activation variables, plus env, in the test's environment. A
// shell shim sets LISTEN_PID to the worker's pid before it execs argv, as
// baton's exec-worker does. The worker runs in its own process group and is
// killed, if need be, and waited for when the test ends.
//
// It uses syscall.ForkExec rather than os/exec, whose ExtraFiles go through
// os.File.Fd: that would make the shared sockets blocking under the feet of
// the workers already running.
func Start(t testing.TB, argv []string, sockets []Socket, env ...string) *Worker {
	t.Helper()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	files := []uintptr{null.Fd(), w.Fd(), w.Fd()}
	var names []string
	named := false
	for _, s := range sockets {
		files = append(files, uintptr(s.Fd))
		names = append(names, s.Name)
		named = named || s.Name != ""
	}
	fullEnv := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, "NOTIFY_SOCKET=")
	})
	if len(sockets) > 0 {
		fullEnv = append(fullEnv, "LISTEN_FDS="+strconv.Itoa(len(sockets)))
		if named {
			fullEnv = append(fullEnv, "LISTEN_FDNAMES="+strings.Join(names, ":"))
		}
	}
	fullEnv = append(fullEnv, env...)
	shim := []string{"/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$@"`, "sh"}
	pid, err := syscall.ForkExec(shim[0], append(shim, argv...), &syscall.ProcAttr{
		Env:   fullEnv,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		t.Fatalf("start %q: %v", argv, err)
	}
	wk := &Worker{Pid: pid, lines: make(chan string, 1024), exited: make(chan int, 1)}
	go func() {
		defer r.Close()
		defer close(wk.lines)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			select {
			case wk.lines <- sc.Text():
			default: // nobody reads: drop rather than block the worker
			}
		}
	}()
	go func() {
		var ws syscall.WaitStatus
		for {
			if _, err := syscall.Wait4(pid, &ws, 0, nil); err != syscall.EINTR {
				break
			}
		}
		wk.exited <- ws.ExitStatus()
	}()
	t.Cleanup(func() {
		select {
		case st := <-wk.exited:
			wk.exited <- st
		default:
			syscall.Kill(-pid, syscall.SIGKILL)
			<-wk.exited
		}
	})
	return wk
}

// Line returns the worker's next line of output. It fails the test if the
// worker has closed its output or says nothing for EventTimeout.
func (w *Worker) Line(t testing.TB) string {
	t.Helper()
	select {
	case l, ok := <-w.lines:
		if !ok {
			t.Fatalf("worker %d: output closed", w.Pid)
		}
		return l
	case <-time.After(EventTimeout):
		t.Fatalf("worker %d: said nothing for %v", w.Pid, EventTimeout)
		return ""
	}
}

// Serving waits for a line starting with prefix, e.g. "node: serving on ",
// and returns it. Other lines are logged.
func (w *Worker) Serving(t testing.TB, prefix string) string {
	t.Helper()
	for {
		l := w.Line(t)
		if strings.HasPrefix(l, prefix) {
			return l
		}
		t.Logf("worker %d: %s", w.Pid, l)
	}
}

// Signal sends sig to the worker.
func (w *Worker) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(w.Pid, sig); err != nil {
		t.Fatalf("signal worker %d: %v", w.Pid, err)
	}
}

// Wait waits for the worker to exit and returns its exit status (-1 if a
// signal killed it).
func (w *Worker) Wait(t testing.TB) int {
	t.Helper()
	select {
	case st := <-w.exited:
		w.exited <- st
		return st
	case <-time.After(EventTimeout):
		t.Fatalf("worker %d did not exit within %v", w.Pid, EventTimeout)
		return -1
	}
}

// NotifySocket listens on a unix datagram socket for sd_notify messages and
// returns the NOTIFY_SOCKET value to give workers ("@..." for the abstract
// namespace if abstract is set) and a channel of the messages.
func NotifySocket(t testing.TB, abstract bool) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	name := path
	if abstract {
		name = "@" + path
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: strings.Replace(name, "@", "\x00", 1), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan string, 64)
	go func() {
		defer close(msgs)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { c.Close() })
	return name, msgs
}

// DrainUnderLoad starts a worker with start, puts 32 clients that never
// retry on the socket, starts a second worker on the same socket, sends
// SIGTERM to the first and checks that it exits 0, that no request failed,
// and that the second worker serves on. start must return once the worker
// serves. The workers must answer with X-Pid: <their pid>.
func DrainUnderLoad(t *testing.T, mode loadtest.Mode, start func(t *testing.T, s Socket) *Worker) loadtest.Result {
	t.Helper()
	return DrainLoad(t, loadtest.Options{Mode: mode}, start)
}

// DrainLoad is DrainUnderLoad for the clients o describes (its protocol,
// mode, TLS and path; Addr is the socket's, Concurrency 32 unless set).
// The workers must tell their pid as loadtest reads it: X-Pid for HTTP
// and in a WebSocket handshake, the x-pid header for gRPC.
func DrainLoad(t *testing.T, o loadtest.Options, start func(t *testing.T, s Socket) *Worker) loadtest.Result {
	t.Helper()
	ln, sock := Listen(t, "http")
	a := start(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 2*EventTimeout)
	defer cancel()
	o.Addr = ln.Addr().String()
	if o.Concurrency == 0 {
		o.Concurrency = 32
	}
	g, err := loadtest.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	if err := g.WaitOK(ctx, 1000); err != nil {
		t.Fatal(err)
	}
	b := start(t, sock)
	if err := g.WaitOK(ctx, g.Snapshot().OK+1000); err != nil {
		t.Fatal(err)
	}

	a.Signal(t, syscall.SIGTERM)
	signalled := time.Now()
	if st := a.Wait(t); st != 0 {
		t.Errorf("drained worker: exit status %d, want 0", st)
	}
	took := time.Since(signalled)
	t.Logf("the first worker drained in %v", took.Round(time.Millisecond))
	// HTTP/2 and gRPC move a client by GOAWAY, not by an idle grace or
	// the deadline.
	if p := o.Protocol; (p == loadtest.HTTP2 || p == loadtest.H2C || p == loadtest.GRPC) && took > time.Second {
		t.Errorf("the first worker took %v to drain over %v, want under a second", took, p)
	}
	apid, bpid := strconv.Itoa(a.Pid), strconv.Itoa(b.Pid)
	after := g.Snapshot()
	if err := g.WaitOK(ctx, after.OK+1000); err != nil {
		t.Fatal(err)
	}
	r := g.Stop()
	t.Logf("load: %v; ok by pid: %v", r, r.PIDs)
	for _, s := range r.Samples {
		t.Logf("failure: %s", s)
	}
	if r.Failed() != 0 {
		t.Errorf("%d of %d requests failed across the drain", r.Failed(), r.Requests)
	}
	if o.Protocol == loadtest.WebSocket && o.Mode == loadtest.KeepAlive && r.CloseFrames == 0 {
		t.Error("no session was ended by a close frame: the drained worker's sessions were not")
	}
	// Up to one response per client from the drained worker may be
	// counted after it exited: it was on its way.
	if r.PIDs[apid] == 0 || r.PIDs[bpid]-after.PIDs[bpid] < 1000-int64(r.Concurrency) {
		t.Errorf("ok by pid %v (%v when the first exited): want both to have served, and %s the last 1000", r.PIDs, after.PIDs, bpid)
	}
	return r
}
