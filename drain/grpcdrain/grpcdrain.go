// Package grpcdrain serves a grpc.Server under baton, with readiness and
// a drain that fails no call of a client that does not retry. It is a
// package of its own so that package drain does not depend on gRPC.
//
//	g := new(drain.Guard)
//	srv := grpc.NewServer(grpcdrain.Guard(g)...)
//	pb.RegisterGreeterServer(srv, greeter{})
//	ln, err := handoff.Listener("grpc")
//	...
//	err = grpcdrain.Serve(context.Background(), srv, ln, drain.Options{Guard: g})
//
// Serve sends READY=1 once serving, and on SIGTERM drains: STOPPING=1,
// this process's copy of the listening socket closed (the other workers
// keep accepting from it), then grpc.Server.GracefulStop: every
// connection gets a GOAWAY, after which a client sends new calls on a new
// connection (to another worker) while the calls in flight finish. At the
// drain deadline Stop closes what is left.
//
// One thing Serve does that a plain GracefulStop does not: GracefulStop
// closes at once a connection that Serve had accepted but not yet begun
// to handle, so its client fails to connect (and, with one address, fails
// the calls waiting for it). Serve waits for gRPC to take up every
// connection accepted before the listener closed, and only then calls
// GracefulStop, which sends them a GOAWAY like the others.
//
// And two that bound the drain whatever clients do: a connection whose
// client has sent nothing (not even HTTP/2's preface) opts.IdleGrace
// after GracefulStop began is closed, and at the deadline every
// connection is closed before Stop. gRPC waits for a connection's
// handshake, in GracefulStop and in Stop alike, up to its
// ConnectionTimeout (120 s by default): a client that connects and stays
// silent would otherwise hold the drain, and the deadline, that long.
package grpcdrain

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/batonhq/baton/drain"
)

// Serve serves srv on ln until a signal from opts.Signals arrives, ctx is
// done or opts.Guard trips, then drains it (see the package
// documentation) and returns: nil when every connection closed within
// opts.Timeout, an error wrapping drain.ErrForced when Stop had to close
// some, one wrapping drain.ErrPanicked when the guard tripped, and an
// error if serving failed (the drain runs all the same). It is
// drain.ServeFunc for a grpc.Server. A handler runs under opts.Guard only
// if srv was made with Guard(opts.Guard).
func Serve(ctx context.Context, srv *grpc.Server, ln net.Listener, opts drain.Options) error {
	tl := &listener{Listener: ln, taken: make(chan struct{}, 1), conns: map[*conn]struct{}{}}
	grace := opts.IdleGrace
	if grace <= 0 {
		grace = drain.DefaultIdleGrace
	}
	// A silent connection is kept for the grace; a client that has not
	// sent its call yet gets GOAWAY and sends it on a new connection.
	opts.DrainsAccepted = opts.DrainsAccepted || grace >= drain.DefaultIdleGrace
	served := make(chan struct{})
	serve := func() error {
		defer close(served)
		return srv.Serve(tl)
	}
	stop := func(ctx context.Context) error {
		tl.Close()
		// Serve accepts one connection after another and hands each to
		// a goroutine of its own: once it has returned, tl has counted
		// every connection it will ever hand over.
		select {
		case <-served:
		case <-ctx.Done():
			return force(srv, tl, ctx)
		}
		if err := tl.waitTaken(ctx); err != nil {
			return force(srv, tl, ctx)
		}
		stopped := make(chan struct{})
		go func() {
			srv.GracefulStop()
			close(stopped)
		}()
		silent := time.AfterFunc(grace, tl.closeSilent)
		defer silent.Stop()
		select {
		case <-stopped:
			return nil
		case <-ctx.Done():
			tl.closeAll()
			srv.Stop()
			<-stopped
			return fmt.Errorf("%w: gRPC connections still open at the drain deadline", drain.ErrForced)
		}
	}
	return drain.ServeFunc(ctx, opts, serve, stop)
}

// force stops srv at the deadline, before GracefulStop was called.
func force(srv *grpc.Server, tl *listener, ctx context.Context) error {
	tl.closeAll()
	srv.Stop()
	return fmt.Errorf("%w: %v before gRPC took up every connection", drain.ErrForced, context.Cause(ctx))
}

// listener counts the connections it accepted that gRPC has not touched
// yet. gRPC's first call on one (a deadline, then its handshake) comes
// after its check for a stop under way, which closes the connection. It
// keeps the connections it accepted until they are closed.
type listener struct {
	net.Listener
	mu      sync.Mutex
	waiting int
	taken   chan struct{} // poked when waiting goes down
	conns   map[*conn]struct{}
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if t, ok := c.(syscall.Conn); ok {
		setUserTimeout(t) // a unix socket refuses it: nothing to do
	}
	tc := &conn{Conn: c, l: l}
	l.mu.Lock()
	l.waiting++
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

// userTimeout is gRPC's default keepalive timeout, which grpc.Server
// makes a TCP connection's TCP_USER_TIMEOUT: data a peer has not
// acknowledged for that long ends the connection, so that a peer that
// vanished does not hold it for the kernel's 15 minutes of retries.
// gRPC sets it only on a *net.TCPConn, which conn hides (and which a
// connection passed under round-robin is not); Serve sets it here instead
// (to the default: a server with keepalive parameters of its own gets the
// default all the same).
const userTimeout = 20 * time.Second

func setUserTimeout(c syscall.Conn) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout/time.Millisecond))
	})
}

// closeAll closes every connection still open.
func (l *listener) closeAll() { l.closeIf(func(*conn) bool { return true }) }

// closeSilent closes the connections whose client has sent nothing.
func (l *listener) closeSilent() { l.closeIf(func(c *conn) bool { return !c.heard.Load() }) }

func (l *listener) closeIf(f func(*conn) bool) {
	l.mu.Lock()
	var shut []*conn
	for c := range l.conns {
		if f(c) {
			shut = append(shut, c)
		}
	}
	l.mu.Unlock()
	for _, c := range shut {
		c.Close()
	}
}

func (l *listener) forget(c *conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

func (l *listener) take() {
	l.mu.Lock()
	l.waiting--
	l.mu.Unlock()
	select {
	case l.taken <- struct{}{}:
	default:
	}
}

// waitTaken returns once no accepted connection waits to be touched, or
// ctx's error.
func (l *listener) waitTaken(ctx context.Context) error {
	for {
		l.mu.Lock()
		n := l.waiting
		l.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-l.taken:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// conn tells its listener when gRPC first touches it, and whether its
// client has sent anything.
type conn struct {
	net.Conn
	l     *listener
	once  sync.Once
	heard atomic.Bool
}

func (c *conn) touch() { c.once.Do(c.l.take) }

func (c *conn) Read(p []byte) (int, error) {
	c.touch()
	n, err := c.Conn.Read(p)
	if n > 0 && !c.heard.Load() {
		c.heard.Store(true)
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) { c.touch(); return c.Conn.Write(p) }

func (c *conn) Close() error {
	c.touch()
	c.l.forget(c)
	return c.Conn.Close()
}

func (c *conn) SetDeadline(t time.Time) error {
	c.touch()
	return c.Conn.SetDeadline(t)
}

// NetConn returns the connection accepted.
func (c *conn) NetConn() net.Conn { return c.Conn }

// Guard returns the server options that run every handler, unary and
// streaming, under g: a handler that panics fails its own call with
// codes.Internal, and g trips, so that the Serve watching g drains the
// worker and returns an error wrapping drain.ErrPanicked.
func Guard(g *drain.Guard) []grpc.ServerOption {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		if g.Do(func() { resp, err = h(ctx, req) }) {
			return nil, errPanicked(info.FullMethod)
		}
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		if g.Do(func() { err = h(srv, ss) }) {
			return errPanicked(info.FullMethod)
		}
		return err
	}
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream)}
}

func errPanicked(method string) error {
	return status.Error(codes.Internal, method+": the handler panicked")
}
