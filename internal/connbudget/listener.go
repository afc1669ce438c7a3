package connbudget

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// deferAccept is how long the kernel keeps a connection that has sent
// nothing before it queues it anyway, in seconds (TCP_DEFER_ACCEPT).
const deferAccept = 1

// Listener is a net.Listener that keeps its server's connections within
// a budget; see the package comment. Serve runs an http.Server on it.
type Listener struct {
	net.Listener
	max     int
	changed chan struct{} // a connection closed, changed state or read
	done    chan struct{}
	once    sync.Once

	mu    sync.Mutex
	conns map[*Conn]struct{}

	peekMu sync.Mutex
	peek   [peekSize]byte
}

// New returns ln with a budget of n connections at once (at least 1).
// It sets TCP_DEFER_ACCEPT on ln when ln is a TCP listener.
func New(ln net.Listener, n int) *Listener {
	if sc, ok := ln.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				// Best effort: without it silent connections reach the
				// server and the budget still makes room for others.
				unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, deferAccept)
			})
		}
	}
	return &Listener{Listener: ln, max: max(n, 1), changed: make(chan struct{}, 1), done: make(chan struct{}), conns: map[*Conn]struct{}{}}
}

// state is where a connection is in its server's hands.
type state int

const (
	reading   state = iota // for a request: just accepted, or idle between requests
	busy                   // a request read, its handler not yet returned
	finishing              // its handler returned, the response is being written out
)

// Conn is a connection the Listener accepted.
type Conn struct {
	net.Conn
	l    *Listener
	once sync.Once

	// Guarded by l.mu.
	state state
	since time.Time // when it entered its state
}

// Serve runs srv on l, as srv.Serve(l) would, once it has hooked srv to
// tell l where each connection is (it wraps ConnState, ConnContext and
// Handler, keeping what they were).
func (l *Listener) Serve(srv *http.Server) error {
	connState, connContext, h := srv.ConnState, srv.ConnContext, srv.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		if bc, ok := c.(*Conn); ok {
			switch st {
			case http.StateNew, http.StateIdle:
				bc.set(reading)
			case http.StateActive:
				bc.set(busy)
			}
		}
		if connState != nil {
			connState(c, st)
		}
	}
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if connContext != nil {
			ctx = connContext(ctx, c)
		}
		if bc, ok := c.(*Conn); ok {
			ctx = context.WithValue(ctx, connKey{}, bc)
		}
		return ctx
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if bc, ok := r.Context().Value(connKey{}).(*Conn); ok {
			defer bc.set(finishing)
		}
		h.ServeHTTP(w, r)
	})
	return srv.Serve(l)
}

type connKey struct{}

// Accept returns the next connection that fits in the budget: at once
// while there is room; else one that brought a request, for which it
// closes an idle one or waits for room.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c, err := l.admit(nc)
		if c != nil || err != nil {
			return c, err
		}
	}
}

// admit returns nc as a Conn once the budget has room for it, or nil if
// it was full and nc brought no request (then it is closed).
func (l *Listener) admit(nc net.Conn) (*Conn, error) {
	for checked := false; ; {
		l.mu.Lock()
		if len(l.conns) < l.max {
			c := &Conn{Conn: nc, l: l, state: reading, since: time.Now()}
			l.conns[c] = struct{}{}
			l.mu.Unlock()
			return c, nil
		}
		l.mu.Unlock()
		if !checked {
			if !l.brought(nc) {
				nc.Close()
				return nil, nil
			}
			checked = true
		}
		l.mu.Lock()
		victim := l.victim()
		if victim != nil {
			delete(l.conns, victim)
		}
		l.mu.Unlock()
		if victim != nil {
			victim.Close()
			continue
		}
		select {
		case <-l.changed:
		case <-l.done:
			nc.Close()
			return nil, net.ErrClosed
		}
	}
}

// victim returns the connection to close to make room, nil if none may
// go. l.mu is held.
func (l *Listener) victim() *Conn {
	cs := make([]*Conn, 0, len(l.conns))
	ws := make([]waiting, 0, len(l.conns))
	for c := range l.conns {
		if c.state != busy {
			cs = append(cs, c)
			ws = append(ws, waiting{since: c.since, reading: c.state == reading})
		}
	}
	if i := pick(ws, func(i int) bool { return cs[i].unread() }); i >= 0 {
		return cs[i]
	}
	return nil
}

// waiting is what pick knows of a connection that is not busy.
type waiting struct {
	since   time.Time
	reading bool
}

// pick returns which of ws to close to make room: the one that has
// waited longest, passing over one reading for a request whose bytes are
// already in the kernel (unread(i)); -1 if none may go.
func pick(ws []waiting, unread func(i int) bool) int {
	order := make([]int, len(ws))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return ws[a].since.Compare(ws[b].since) })
	for _, i := range order {
		if !ws[i].reading || !unread(i) {
			return i
		}
	}
	return -1
}

// peekSize is how much of a new connection's first bytes brought reads:
// more than any probe or scrape sends, and a client that sends this much
// at once is not trickling a request.
const peekSize = 1 << 10

// brought reports whether nc's first bytes, in the kernel, are a whole
// request head (up to the empty line that ends it), or at least peekSize
// bytes of one.
func (l *Listener) brought(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true // nothing to tell by: it takes its chance
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	l.peekMu.Lock()
	defer l.peekMu.Unlock()
	n := 0
	rc.Control(func(fd uintptr) { n, _, _ = unix.Recvfrom(int(fd), l.peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT) })
	return n == len(l.peek) || n > 0 && wholeHead(l.peek[:n])
}

// wholeHead reports whether b holds the end of a request head: an empty
// line, after CRLF or a bare LF as net/http takes it.
func wholeHead(b []byte) bool {
	return bytes.Contains(b, []byte("\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

// Close stops accepting: a waiting Accept returns net.ErrClosed. The
// connections served stay open (the server closes them).
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// signal wakes an Accept waiting for room.
func (l *Listener) signal() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

func (c *Conn) set(st state) {
	c.l.mu.Lock()
	c.state, c.since = st, time.Now()
	c.l.mu.Unlock()
	if st != busy {
		c.l.signal()
	}
}

// Read is the connection's: once it has read, the bytes that protected
// it from being closed are taken, so a waiting Accept looks again.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.l.signal()
	}
	return n, err
}

// Close closes the connection and gives its place back.
func (c *Conn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.signal()
	})
	return c.Conn.Close()
}

// unread reports whether bytes wait in c's receive queue.
func (c *Conn) unread() bool {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
}
