package drain

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Defaults for the zero values of Options.
const (
	DefaultTimeout   = 30 * time.Second
	DefaultIdleGrace = time.Second
)

// TimeoutEnv is the environment variable baton sets to the worker's drain
// timeout (a Go duration such as "30s"). Serve uses it when Options.Timeout
// is zero.
const TimeoutEnv = "BATON_DRAIN_TIMEOUT"

// ErrForced is wrapped by the error Serve returns when the drain deadline
// passed and it closed connections that had not finished.
var ErrForced = errors.New("drain: forced close of open connections")

// Options configure Serve. Zero values mean the documented defaults.
type Options struct {
	// Timeout is the hard deadline for the whole drain. 0 means
	// $BATON_DRAIN_TIMEOUT if set, else DefaultTimeout.
	Timeout time.Duration
	// IdleGrace is how long an idle keep-alive connection (or one accepted
	// but still without a request) gets to deliver its next request before
	// it is closed. 0 means DefaultIdleGrace.
	IdleGrace time.Duration
	// Signals start the drain. Default SIGTERM and SIGINT. During the
	// drain they are ignored, not taken as "hurry": under systemd's
	// default KillMode=control-group a worker gets SIGTERM from systemd
	// and from baton at once. The deadline (and the supervisor's SIGKILL)
	// is what ends a drain early.
	Signals []os.Signal
	// Notify sends an sd_notify state ("READY=1", "STOPPING=1"). Default:
	// daemon.SdNotify to $NOTIFY_SOCKET, a no-op when it is unset.
	Notify func(state string) error
	// DrainsAccepted has READY=1 say DrainsAcceptedField: told to stop,
	// this server serves every connection it has accepted, even one whose
	// request has not come yet, for at least a second. Serve and
	// grpcdrain.Serve set it when their idle grace is a second or more
	// (they keep such a connection that long); a ServeConns or ServeFunc
	// server sets it if it is true of it.
	DrainsAccepted bool
	// Guard runs every handler; when it trips (a panic in a handler, or
	// in a goroutine started with its Go method) Serve drains as on
	// SIGTERM and returns an error wrapping ErrPanicked. nil means a
	// Guard of Serve's own; pass one to guard goroutines as well, or to
	// set its OnPanic.
	Guard *Guard
	// NoHandlerGuard leaves a panicking handler to net/http, which logs
	// it, closes that connection and serves on. Serve still drains when
	// Guard trips.
	NoHandlerGuard bool
}

// withDefaults validates o and fills in its defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
		if v := os.Getenv(TimeoutEnv); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				return o, fmt.Errorf("drain: %s: %w", TimeoutEnv, err)
			}
			if d <= 0 {
				return o, fmt.Errorf("drain: %s=%q: not a positive duration", TimeoutEnv, v)
			}
			o.Timeout = d
		}
	}
	if o.IdleGrace == 0 {
		o.IdleGrace = DefaultIdleGrace
	}
	switch {
	case o.Timeout < 0:
		return o, fmt.Errorf("drain: negative timeout %v", o.Timeout)
	case o.IdleGrace < 0:
		return o, fmt.Errorf("drain: negative idle grace %v", o.IdleGrace)
	}
	if len(o.Signals) == 0 {
		o.Signals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	}
	if o.Notify == nil {
		o.Notify = sdNotify
	}
	if o.Guard == nil {
		o.Guard = new(Guard)
	}
	return o, nil
}

// DrainsAcceptedField is what a worker says beside READY=1 to tell baton
// that told to stop it serves every connection it has accepted, read
// from or not, for at least a second (Options.DrainsAccepted): under
// balance = "reuseport" baton then sends SIGTERM without first waiting
// for it to read them, as it does for a stock server that closes such a
// connection (docs/protocols.md).
const DrainsAcceptedField = "X_BATON_DRAINS_ACCEPTED=1"

// sdNotify sends state to $NOTIFY_SOCKET, if set.
func sdNotify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}

// Serve serves srv on ln until a signal from opts.Signals arrives, ctx is
// done or opts.Guard trips, then drains (see the package documentation) and
// returns. It sends READY=1 once serving (unless the guard tripped before)
// and STOPPING=1 when the drain starts.
//
// It returns nil when every connection finished within the deadline, an
// error wrapping ErrForced when some had to be closed, an error wrapping
// ErrPanicked when the guard tripped (before or during the drain), and an
// error if serving failed (the drain then runs all the same) or a
// notification could not be sent (serving goes on regardless). If srv is
// shut down by someone else (srv.Shutdown or srv.Close), Serve returns at
// once, as srv.Serve does.
//
// Serve takes srv over: it wraps srv.Handler (nil means
// http.DefaultServeMux; see Guard.Handler for what the guard adds) and
// srv.ConnState, sets srv.TLSNextProto (when nil) to serve HTTP/2 in a way
// it can end with two GOAWAYs, and it wraps the connections ln accepts, so ConnState
// hooks, ConnContext and Hijack see a wrapper of the *net.TCPConn or
// *net.UnixConn; its NetConn method returns the original. A Server may be
// passed to Serve only once.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	// A connection with no request yet is kept for the idle grace.
	opts.DrainsAccepted = opts.DrainsAccepted || opts.IdleGrace >= DefaultIdleGrace
	t := newTracker(opts.IdleGrace)
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Counted until it returns: a handler that hijacked its
		// connection (a WebSocket) is waited for like a connection.
		t.handlers.Add(1)
		defer t.handlerDone()
		// Set before the handler runs, so that it is in the header
		// whenever the handler writes it; net/http then closes the
		// connection after this response. HTTP/2 has no such header.
		if t.draining.Load() && r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
	base := srv.BaseContext
	srv.BaseContext = func(l net.Listener) context.Context {
		ctx := context.Background()
		if base != nil {
			ctx = base(l)
		}
		return context.WithValue(ctx, begunKey{}, (<-chan struct{})(t.begun))
	}
	if !opts.NoHandlerGuard {
		srv.Handler = opts.Guard.Handler(srv.Handler)
	}
	hook := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		// The HTTP/2 server reports the connection it was handed.
		if k, ok := c.(interface{ drainKey() net.Conn }); ok {
			c = k.drainKey()
		}
		// The caller's hook first: once the tracker has seen the last
		// connection close, Serve may return, and every hook has run.
		if hook != nil {
			hook(c, s)
		}
		t.connState(c, s)
	}

	r := begin(opts)
	defer r.end()

	serveHTTP2(srv, t)
	tl := &listener{Listener: ln}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(tl) }()
	r.ready()

	serveErr, closed := r.wait(ctx, served, http.ErrServerClosed)
	if closed {
		return r.result()
	}
	if serveErr != nil {
		served = nil
	}
	// Responses carry "Connection: close" from before STOPPING=1 on: a
	// client that learns of the drain must not see one without.
	t.draining.Store(true)
	close(t.begun)
	r.notify("STOPPING=1")
	t.goAwayHTTP2()
	r.errs = append(r.errs, serveErr, t.drain(srv, tl, served, opts.Timeout))
	return r.result()
}

// run is what every Serve function shares: the stop signals, registered
// for its whole life so that signals during the drain are ignored rather
// than kill the process; READY=1; the wait for a reason to drain; and the
// errors to return.
type run struct {
	opts Options
	sigs chan os.Signal
	errs []error
}

func begin(opts Options) *run {
	r := &run{opts: opts, sigs: make(chan os.Signal, 1)}
	signal.Notify(r.sigs, opts.Signals...)
	return r
}

func (r *run) end() { signal.Stop(r.sigs) }

func (r *run) notify(state string) {
	if err := r.opts.Notify(state); err != nil {
		first, _, _ := strings.Cut(state, "\n")
		r.errs = append(r.errs, fmt.Errorf("drain: notify %s: %w", first, err))
	}
}

// ready says READY=1, unless the guard tripped already (a guarded
// goroutine panicked before Serve was called): the worker is not fit to
// serve, and gets only STOPPING=1.
func (r *run) ready() {
	if r.opts.Guard.Err() != nil {
		return
	}
	if r.opts.DrainsAccepted {
		r.notify("READY=1\n" + DrainsAcceptedField)
	} else {
		r.notify("READY=1")
	}
}

// wait returns once the drain should begin: ctx done, a stop signal, the
// guard tripped, or serving failed (that error, wrapped). closed: serving
// ended with an error matching closedErr (shut down by the caller), and
// there is nothing to drain.
func (r *run) wait(ctx context.Context, served <-chan error, closedErr error) (serveErr error, closed bool) {
	select {
	case <-ctx.Done():
	case <-r.sigs:
	case <-r.opts.Guard.Done():
	case err := <-served:
		if errors.Is(err, closedErr) {
			return nil, true
		}
		return fmt.Errorf("drain: serve: %w", err), false
	}
	return nil, false
}

// result joins the errors, the guard's first: a panic during the drain
// counts too.
func (r *run) result() error {
	return errors.Join(append([]error{r.opts.Guard.Err()}, r.errs...)...)
}

// begunKey is the context key of the channel Draining returns.
type begunKey struct{}

// Draining returns a channel that is closed once the drain of the Serve
// whose request ctx is (or derives from) has begun; nil (never closed)
// for a context that is not. A handler that keeps its connection past a
// response (a WebSocket it hijacked, a stream of server-sent events, a
// long poll) watches it to end the conversation the way its protocol says
// (a close frame, a last event) before the drain's deadline; Serve waits
// for such a handler to return as it waits for a connection.
func Draining(ctx context.Context) <-chan struct{} {
	ch, _ := ctx.Value(begunKey{}).(<-chan struct{})
	return ch
}

// drain runs steps 1 to 4 of the package documentation. served delivers
// srv.Serve's result (nil if it has returned already).
func (t *tracker) drain(srv *http.Server, ln net.Listener, served <-chan error, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	force := func() error {
		n, h := t.open(), t.handlers.Load()
		srv.Close()
		if n == 0 {
			return fmt.Errorf("%w: %d handlers of hijacked connections still running at the %v deadline", ErrForced, h, timeout)
		}
		return fmt.Errorf("%w: %d open at the %v deadline", ErrForced, n, timeout)
	}

	ln.Close()
	// srv.Serve has run the StateNew hook of every connection it accepted
	// before it returns, so once it has, the tracker knows them all.
	if served != nil {
		select {
		case <-served: // the error of Accept on a closed listener
		case <-deadline.C:
			return force()
		}
	}

	wake := time.NewTimer(timeout)
	wake.Stop()
	for {
		next, open := t.closeIdle(time.Now())
		if open == 0 && t.handlers.Load() == 0 {
			return nil
		}
		var wakeC <-chan time.Time
		if !next.IsZero() {
			wake.Reset(time.Until(next))
			wakeC = wake.C
		}
		select {
		case <-t.changed:
		case <-wakeC:
		case <-deadline.C:
			return force()
		}
	}
}
