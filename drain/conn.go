package drain

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// aLongTimeAgo is a read deadline that has passed: setting it makes a
// pending Read return at once with os.ErrDeadlineExceeded.
var aLongTimeAgo = time.Unix(1, 0)

// tracker follows every connection of one server through net/http's
// connection states and closes the idle ones once draining.
type tracker struct {
	grace    time.Duration
	draining atomic.Bool
	begun    chan struct{} // closed as the drain begins (Draining)
	handlers atomic.Int64  // handlers running
	// changed gets a value (without blocking) whenever a connection
	// changes state or goes away, to wake the drain loop.
	changed chan struct{}

	mu        sync.Mutex
	conns     map[net.Conn]*conn // keyed by the net.Conn net/http passes to ConnState
	goingAway bool               // HTTP/2 connections are being sent away
}

func newTracker(grace time.Duration) *tracker {
	return &tracker{
		grace:   grace,
		begun:   make(chan struct{}),
		changed: make(chan struct{}, 1),
		conns:   make(map[net.Conn]*conn),
	}
}

// connState is the http.Server.ConnState hook.
func (t *tracker) connState(nc net.Conn, s http.ConnState) {
	c, wrapped := nc.(*conn)
	t.mu.Lock()
	switch s {
	case http.StateNew:
		if !wrapped {
			c = &conn{Conn: nc} // e.g. a *tls.Conn: tracked, not wrapped
		}
		t.conns[nc] = c
	case http.StateClosed, http.StateHijacked:
		c = nil
		delete(t.conns, nc)
	default:
		c = t.conns[nc]
	}
	t.mu.Unlock()
	if c != nil {
		c.setState(s)
	}
	t.poke()
}

// http2Linger is how long an HTTP/2 connection may stay idle after its
// first GOAWAY, and once sent the final one, before it is closed (see
// conn.closeIfIdle).
const http2Linger = 400 * time.Millisecond

// handlerDone counts a handler out, waking a drain that waits for it.
func (t *tracker) handlerDone() {
	t.handlers.Add(-1)
	if t.draining.Load() {
		t.poke()
	}
}

// poke wakes the drain loop.
func (t *tracker) poke() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// markHTTP2 records that h's connection (as ConnState saw it) speaks
// HTTP/2: GOAWAY ends it, not an idle kick. If HTTP/2 connections are
// being sent away already, so is this one.
func (t *tracker) markHTTP2(h *h2conn) {
	t.mu.Lock()
	h.wentAway = func(time.Time) { t.poke() }
	if c := t.conns[h.key]; c != nil {
		h.wentAway = func(told time.Time) {
			c.mu.Lock()
			c.goneAway = told
			if told.IsZero() {
				c.goneAway = time.Now()
			}
			c.mu.Unlock()
			t.poke()
		}
		c.mu.Lock()
		c.h2 = h
		c.mu.Unlock()
	}
	away := t.goingAway
	t.mu.Unlock()
	if away {
		go h.goAway(noticeBound)
	}
}

// goAwayHTTP2 sends every HTTP/2 connection away (h2conn.goAway), those
// open now and those to come.
func (t *tracker) goAwayHTTP2() {
	t.mu.Lock()
	t.goingAway = true
	var hs []*h2conn
	for _, c := range t.conns {
		c.mu.Lock()
		if c.h2 != nil {
			hs = append(hs, c.h2)
		}
		c.mu.Unlock()
	}
	t.mu.Unlock()
	for _, h := range hs {
		go h.goAway(noticeBound)
	}
}

// open returns the number of connections not yet closed.
func (t *tracker) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// closeIdle ends the wait of every connection that has been idle for the
// grace period. It returns when the next one will have been (zero if none
// is idle) and how many connections are open.
func (t *tracker) closeIdle(now time.Time) (next time.Time, open int) {
	t.mu.Lock()
	cs := make([]*conn, 0, len(t.conns))
	for _, c := range t.conns {
		cs = append(cs, c)
	}
	t.mu.Unlock()
	for _, c := range cs {
		if due, ok := c.closeIfIdle(now, t.grace); !ok && !due.IsZero() && (next.IsZero() || due.Before(next)) {
			next = due
		}
	}
	return next, len(cs)
}

// listener wraps every TCP and unix connection it accepts in a conn.
type listener struct {
	net.Listener
}

func (l *listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if sc, ok := nc.(sockConn); ok {
		c := &conn{Conn: nc}
		c.raw, _ = sc.SyscallConn() // nil on error: then no pending-data check
		return c, nil
	}
	// Anything else, notably *tls.Conn, which net/http must see as such
	// to run the handshake, stays as it is.
	return nc, nil
}

// sockConn is what *net.TCPConn and *net.UnixConn have in common: a
// descriptor, and the half-close net/http uses.
type sockConn interface {
	net.Conn
	syscall.Conn
	CloseWrite() error
}

// conn is one tracked connection, as net/http's ConnState hook reports it.
//
// For a connection the listener wrapped (net/http serves the conn itself)
// the drain can end an idle wait safely. An idle net/http connection
// goroutine sits in Read, waiting for the next request; the
// drain does not Close the connection under it but sets a read deadline in
// the past (a "kick"). Read then returns, and net/http closes the connection
// itself: no close can ever race with a request net/http is already
// reading, because the kick is taken back as soon as Read sees a byte, and
// a Read cut short by the kick first checks the kernel's receive queue: if
// the next request has arrived meanwhile, the kick is taken back and the
// request is read and served (with "Connection: close"). What remains is a
// request still on its way from the client when net/http closes the
// socket, which no server can avoid: that client was silent for the whole
// grace period.
//
// An unwrapped connection (e.g. TLS) is kicked the same way, without the
// receive queue check.
type conn struct {
	net.Conn
	raw syscall.RawConn // for the receive queue check; nil if unwrapped

	mu        sync.Mutex
	state     http.ConnState
	since     time.Time // when it last became new or idle
	readSince bool      // bytes arrived since then: a request is being read
	kicked    bool      // read deadline forced into the past
	h2        *h2conn   // as the HTTP/2 server sees it, if it got it: GOAWAY ends it
	goneAway  time.Time // HTTP/2: when it was first told GOAWAY; set once the final one is out
	deadline  time.Time // the read deadline net/http last set
}

// NetConn returns the connection that Serve wrapped, like
// tls.Conn.NetConn.
func (c *conn) NetConn() net.Conn { return c.Conn }

func (c *conn) setState(s http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = s
	switch s {
	case http.StateNew, http.StateIdle:
		c.since = time.Now()
		c.readSince = false
	case http.StateActive:
		c.unkick() // cannot happen while kicked, but be safe
	}
}

// closeIfIdle kicks c if it has waited for a request for at least grace.
// It reports whether it did, or else when c will have waited that long
// (zero if c is not waiting for a request).
func (c *conn) closeIfIdle(now time.Time, grace time.Duration) (due time.Time, kicked bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h2 != nil {
		// Sent its final GOAWAY, a client opens no more streams on it,
		// but may leave it open (Go's does when it had no stream open);
		// net/http would wait a second. Idle that long since it was
		// first told, it ends.
		if c.kicked || c.goneAway.IsZero() || c.state != http.StateIdle {
			return time.Time{}, false
		}
		grace = http2Linger
		if c.goneAway.After(c.since) {
			c.since = c.goneAway
		}
	} else if c.kicked || c.readSince || c.state != http.StateNew && c.state != http.StateIdle {
		// Bytes since it went idle are a request being read; over
		// HTTP/2 they are frames (settings, pings, window updates): a
		// new stream would have made it active, and one after the
		// GOAWAY is the client's to send again.
		return time.Time{}, false
	}
	due = c.since.Add(grace)
	if now.Before(due) {
		return due, false
	}
	c.kicked = true
	c.Conn.SetReadDeadline(aLongTimeAgo)
	return time.Time{}, true
}

// unkick restores the read deadline net/http asked for. c.mu is held.
func (c *conn) unkick() {
	if c.kicked {
		c.kicked = false
		c.Conn.SetReadDeadline(c.deadline)
	}
}

// Read is net/http's only way to get bytes, so it sees first when a request
// starts to arrive.
func (c *conn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		c.mu.Lock()
		if n > 0 {
			c.readSince = true
			c.unkick()
			c.mu.Unlock()
			return n, err
		}
		if err == nil || !c.kicked || !errors.Is(err, os.ErrDeadlineExceeded) || c.pending() == 0 {
			c.mu.Unlock()
			return n, err
		}
		// Kicked, but the next request had already reached the kernel:
		// take the kick back and read it.
		c.readSince = true
		c.unkick()
		c.mu.Unlock()
	}
}

// SetReadDeadline records the deadline net/http wants, to restore it
// after a kick; while kicked, the deadline stays in the past.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if c.kicked {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline and SetWriteDeadline.
func (c *conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if c.kicked {
		return c.Conn.SetWriteDeadline(t)
	}
	return c.Conn.SetDeadline(t)
}

// ReadFrom lets net/http use sendfile (or splice) for a response body
// from a file, as it does on a *net.TCPConn.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

// writerOnly hides a Writer's ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }

// CloseWrite lets net/http half-close before it gives up on a request body.
func (c *conn) CloseWrite() error {
	return c.Conn.(interface{ CloseWrite() error }).CloseWrite()
}

// pending returns the number of bytes in c's receive queue, 0 if unknown.
// c.mu is held.
func (c *conn) pending() int {
	if c.raw == nil {
		return 0
	}
	var n int
	if err := c.raw.Control(func(fd uintptr) { n = receiveQueue(fd) }); err != nil {
		return 0
	}
	return n
}
