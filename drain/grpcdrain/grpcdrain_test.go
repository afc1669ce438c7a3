package grpcdrain_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/batonhq/baton/drain"
	"github.com/batonhq/baton/drain/grpcdrain"
	"github.com/batonhq/baton/loadtest"
)

// eventTimeout bounds every wait for an event; reaching it fails the test.
const eventTimeout = 20 * time.Second

// service is baton.hello.Hello's Say (as in examples/greeter), plus Slow
// (sleeps the milliseconds its request names) and Panic.
type service struct {
	id    string
	calls atomic.Int64
	slow  chan struct{} // poked when a Slow call starts
}

func (s *service) desc() *grpc.ServiceDesc {
	method := func(name string, f func(ctx context.Context, in string) (string, error)) grpc.MethodDesc {
		return grpc.MethodDesc{MethodName: name, Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			call := func(ctx context.Context, req any) (any, error) {
				out, err := f(ctx, req.(*wrapperspb.StringValue).Value)
				if err != nil {
					return nil, err
				}
				s.calls.Add(1)
				return wrapperspb.String(out), nil
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/baton.hello.Hello/" + name}, call)
		}}
	}
	return &grpc.ServiceDesc{
		ServiceName: "baton.hello.Hello",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			method("Say", func(ctx context.Context, in string) (string, error) {
				grpc.SetHeader(ctx, metadata.Pairs("x-pid", s.id))
				return "hello from " + s.id + ": " + in, nil
			}),
			method("Slow", func(ctx context.Context, in string) (string, error) {
				ms, _ := strconv.Atoi(in)
				s.slow <- struct{}{}
				select {
				case <-time.After(time.Duration(ms) * time.Millisecond):
					return "slept", nil
				case <-ctx.Done():
					return "", status.FromContextError(ctx.Err()).Err()
				}
			}),
			method("Panic", func(context.Context, string) (string, error) { panic("test: Panic called") }),
		},
	}
}

// server is one grpcdrain.Serve (or another way to serve) running in the
// test.
type server struct {
	*service
	cancel   context.CancelFunc
	done     chan error
	stopping chan struct{}
}

// serveFunc is grpcdrain.Serve or a way to compare it with.
type serveFunc func(ctx context.Context, srv *grpc.Server, ln net.Listener, opts drain.Options) error

// start serves a service on ln with serve and returns once it said
// READY=1. It is drained when the test ends.
func start(t *testing.T, ln net.Listener, id string, serve serveFunc, opts drain.Options) *server {
	t.Helper()
	s := &server{service: &service{id: id, slow: make(chan struct{}, 8)}, done: make(chan error, 1), stopping: make(chan struct{})}
	if opts.Guard == nil {
		opts.Guard = new(drain.Guard)
	}
	opts.Guard.OnPanic = func(any, []byte) {}
	// Not SIGTERM or SIGINT: a test must not take those from go test.
	opts.Signals = []os.Signal{syscall.SIGUSR2}
	ready := make(chan struct{})
	opts.Notify = func(state string) error {
		switch state {
		case "READY=1", "READY=1\n" + drain.DrainsAcceptedField: // the latter from Serve with a grace of 1s or more
			close(ready)
		case "STOPPING=1":
			close(s.stopping)
		}
		return nil
	}
	srv := grpc.NewServer(grpcdrain.Guard(opts.Guard)...)
	srv.RegisterService(s.desc(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- serve(ctx, srv, ln, opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(eventTimeout):
			t.Errorf("server %s did not return after the test", id)
		}
	})
	waitFor(t, ready, "READY=1 from "+id)
	return s
}

// drain starts the drain and returns Serve's result.
func (s *server) drain(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(eventTimeout):
		t.Fatalf("server %s did not return within %v of the drain", s.id, eventTimeout)
		return nil
	}
}

func (s *server) waitCalls(t *testing.T, n int64) {
	t.Helper()
	for deadline := time.Now().Add(eventTimeout); s.calls.Load() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("server %s answered %d calls, want %d", s.id, s.calls.Load(), n)
		}
	}
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(eventTimeout):
		t.Fatalf("no %s within %v", what, eventTimeout)
	}
}

// listen returns a TCP listener on 127.0.0.1, closed when the test ends:
// the supervisor's copy of the socket, never used to accept.
func listen(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// dup returns another listener on the socket of ln, as a worker has.
func dup(t *testing.T, ln *net.TCPListener) net.Listener {
	t.Helper()
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// plain is what a service without this package would do: drain.ServeFunc
// with GracefulStop, and Stop at the deadline.
func plain(ctx context.Context, srv *grpc.Server, ln net.Listener, opts drain.Options) error {
	return drain.ServeFunc(ctx, opts, func() error { return srv.Serve(ln) }, func(ctx context.Context) error {
		stop := context.AfterFunc(ctx, srv.Stop)
		defer stop()
		srv.GracefulStop()
		return nil
	})
}

// drains runs servers one after another on one socket under load and
// returns the load's result: each drains while the next serves.
func drains(t *testing.T, serve serveFunc, mode loadtest.Mode, n int) loadtest.Result {
	base := listen(t)
	opts := drain.Options{Timeout: 10 * time.Second}
	old := start(t, dup(t, base), "s0", serve, opts)
	g, err := loadtest.Start(context.Background(), loadtest.Options{
		Addr: base.Addr().String(), Protocol: loadtest.GRPC, Mode: mode, Concurrency: 32,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	old.waitCalls(t, 200)
	for i := 1; i <= n; i++ {
		next := start(t, dup(t, base), fmt.Sprintf("s%d", i), serve, opts)
		old.waitCalls(t, old.calls.Load()+200)
		began := time.Now()
		if err := old.drain(t); err != nil {
			t.Errorf("drain %d: %v", i, err)
		}
		took := time.Since(began)
		next.waitCalls(t, next.calls.Load()+200)
		t.Logf("drain %d: %s answered %d calls, drained in %v", i, old.id, old.calls.Load(), took.Round(time.Millisecond))
		old = next
	}
	r := g.Stop()
	t.Logf("load: %v", r)
	for _, s := range r.Samples {
		t.Logf("failure: %s", s)
	}
	return r
}

// TestDrainUnderLoad is the package's promise: 32 gRPC clients that do
// not retry, in both modes, and servers that drain one after another on
// one socket: no call fails.
func TestDrainUnderLoad(t *testing.T) {
	for _, mode := range []loadtest.Mode{loadtest.KeepAlive, loadtest.PerRequest} {
		t.Run(mode.String(), func(t *testing.T) {
			if r := drains(t, grpcdrain.Serve, mode, 10); r.Failed() != 0 {
				t.Errorf("%d of %d calls failed across 10 drains", r.Failed(), r.Requests)
			}
		})
	}
}

// TestPlainGracefulStop measures, for comparison, what the same load sees
// with a plain GracefulStop (drain.ServeFunc, GracefulStop, Stop at the
// deadline). It asserts nothing about the plain way; the figures go in
// the log.
func TestPlainGracefulStop(t *testing.T) {
	for _, mode := range []loadtest.Mode{loadtest.KeepAlive, loadtest.PerRequest} {
		t.Run(mode.String(), func(t *testing.T) {
			r := drains(t, plain, mode, 10)
			t.Logf("plain GracefulStop, %v: %d of %d calls failed across 10 drains", mode, r.Failed(), r.Requests)
		})
	}
}

// call makes one call of method on a connection of its own.
func call(t *testing.T, addr, method, in string) (string, error) {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	var out wrapperspb.StringValue
	err = cc.Invoke(ctx, "/baton.hello.Hello/"+method, wrapperspb.String(in), &out)
	return out.Value, err
}

// TestDrainDeadline: a call that outlasts the drain's deadline is cut
// then, and Serve says so.
func TestDrainDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ln := listen(t)
	s := start(t, dup(t, ln), "s0", grpcdrain.Serve, drain.Options{Timeout: timeout})
	failed := make(chan error, 1)
	go func() {
		_, err := call(t, ln.Addr().String(), "Slow", "60000")
		failed <- err
	}()
	waitFor(t, s.slow, "the slow call")
	began := time.Now()
	err := s.drain(t)
	took := time.Since(began)
	if !errors.Is(err, drain.ErrForced) {
		t.Errorf("Serve: %v, want an error wrapping ErrForced", err)
	}
	if took < timeout || took > timeout+time.Second {
		t.Errorf("Serve returned %v after the drain began, want at the %v deadline", took, timeout)
	}
	if err := <-failed; status.Code(err) != codes.Unavailable {
		t.Errorf("the slow call: %v, want Unavailable", err)
	}
}

// TestGuard: a handler that panics fails its own call with Internal, and
// the server drains: STOPPING=1, and Serve returns ErrPanicked, while a
// call in flight on it finishes.
func TestGuard(t *testing.T) {
	ln := listen(t)
	s := start(t, dup(t, ln), "s0", grpcdrain.Serve, drain.Options{Timeout: 10 * time.Second})
	slow := make(chan error, 1)
	go func() {
		_, err := call(t, ln.Addr().String(), "Slow", "300")
		slow <- err
	}()
	waitFor(t, s.slow, "the slow call")
	if _, err := call(t, ln.Addr().String(), "Panic", ""); status.Code(err) != codes.Internal {
		t.Errorf("Panic: %v, want Internal", err)
	}
	waitFor(t, s.stopping, "STOPPING=1 after the panic")
	select {
	case err := <-s.done:
		s.done <- err
		if !errors.Is(err, drain.ErrPanicked) {
			t.Errorf("Serve: %v, want an error wrapping ErrPanicked", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("Serve did not return after the panic")
	}
	if err := <-slow; err != nil {
		t.Errorf("the call in flight during the panic's drain: %v", err)
	}
}

// silentConn connects to addr and sends nothing, as a client that stalls
// (or a port scanner) does, and returns once the server has taken it up:
// a call made after it, on a connection of its own, was answered.
func silentConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := call(t, addr, "Say", "after the silent one"); err != nil {
		t.Fatalf("a call after the silent connection: %v", err)
	}
	return c
}

// closedByServer reports whether the server closed c.
func closedByServer(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(eventTimeout))
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the silent connection: %v, want it closed by the server", err)
	}
}

// TestSilentClient: a client that connects and sends nothing does not hold
// the drain (gRPC would wait for its handshake up to 120 s): it is closed
// IdleGrace after GracefulStop began, and the drain ends well within its
// deadline.
func TestSilentClient(t *testing.T) {
	ln := listen(t)
	s := start(t, dup(t, ln), "s0", grpcdrain.Serve, drain.Options{Timeout: 10 * time.Second, IdleGrace: 100 * time.Millisecond})
	c := silentConn(t, ln.Addr().String())
	began := time.Now()
	if err := s.drain(t); err != nil {
		t.Errorf("Serve: %v, want nil", err)
	}
	if took := time.Since(began); took >= 10*time.Second {
		t.Errorf("the drain took %v, its whole deadline", took)
	}
	closedByServer(t, c)
}

// TestSilentClientDeadline: with an IdleGrace longer than the deadline,
// the deadline closes the silent connection, and Serve returns then, not
// when gRPC's handshake would have given up.
func TestSilentClientDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ln := listen(t)
	s := start(t, dup(t, ln), "s0", grpcdrain.Serve, drain.Options{Timeout: timeout, IdleGrace: time.Minute})
	c := silentConn(t, ln.Addr().String())
	began := time.Now()
	if err := s.drain(t); !errors.Is(err, drain.ErrForced) {
		t.Errorf("Serve: %v, want an error wrapping ErrForced", err)
	}
	if took := time.Since(began); took > timeout+5*time.Second {
		t.Errorf("Serve returned %v after the drain began, want at its %v deadline", took, timeout)
	}
	closedByServer(t, c)
}

// Serve says with READY=1 that it serves what it accepted when its grace
// is a second or more (the default), and not below.
func TestReadyDeclaresDrainsAccepted(t *testing.T) {
	for grace, want := range map[time.Duration]string{
		0:                      "READY=1\n" + drain.DrainsAcceptedField,
		200 * time.Millisecond: "READY=1",
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		states := make(chan string, 4)
		opts := drain.Options{IdleGrace: grace, Notify: func(s string) error { states <- s; return nil }}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- grpcdrain.Serve(ctx, grpc.NewServer(), ln, opts) }()
		if got := <-states; got != want {
			t.Errorf("grace %v: READY datagram %q, want %q", grace, got, want)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
