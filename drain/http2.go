package drain

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"time"
)

// HTTP/2 has its own answer to the keep-alive race: GOAWAY. RFC 9113
// §6.8 says how a server uses it without losing a request: a first GOAWAY
// with the largest stream id (no new streams, please), then, at least a
// round trip later, a final one with the last stream it took; streams the
// client opened in between, before it saw the first, are served.
// net/http's HTTP/2 server (and golang.org/x/net/http2's, the same code)
// sends only the final GOAWAY, from one place: the hook it registers with
// Server.RegisterOnShutdown. A client's streams that cross it on the wire
// are refused, and a client that does not retry them (h2load, curl, most
// proxies; Go's own client retries) fails them.
//
// So Serve does the first step itself and has net/http do the second:
//
//   - every HTTP/2 connection is served through a connection of its own,
//     an h2conn (frames.go), which follows the frames both ways. The
//     drain's PINGs and first GOAWAY go out through it between two of the
//     server's frames, never inside one nor inside a header block (a
//     HEADERS and its CONTINUATIONs admit no other frame): the server's
//     writes and these pass one lock, and its own writer is not touched;
//   - each connection is handed to an HTTP/2 server of its own, set up by
//     net/http on a hub that never serves (TLSNextProto). The hub's
//     Shutdown runs only the GOAWAY hook, for that connection alone: the
//     server sends the final GOAWAY, finishes its streams and closes.
//     (srv.Shutdown would also close idle HTTP/1 connections at once.)
//
// Both kinds of HTTP/2 connection go through net/http's "unencrypted_http2"
// handover, the one it uses for h2c, as that is the one that takes any
// net.Conn: for TLS the h2conn reads the client's preface itself and
// passes the TLS state on, so the server checks and reports it as before.
// The connections are still srv's: net/http passes srv to the HTTP/2
// server, which takes its settings (HTTP2, timeouts, ConnState, ErrorLog)
// from it.
//
// h2conn.goAway sends a connection away in five steps:
//
//  1. a PING (quietPing), at once if the server is not in the middle of a
//     frame, else right after that frame; from then on the server's output
//     is held back (holdMax at most);
//  2. the client's answer: it has read, and acted on, all the server sent
//     before, so it has nothing unread ahead of what comes next;
//  3. the notice, the first GOAWAY and a second PING (noticePing), then
//     the output held back. The client reads the GOAWAY before any
//     response that would have it queue a request: a client that reads a
//     GOAWAY behind responses refuses, itself, the requests they made it
//     queue (nghttp2's do, and h2load does not send them again);
//  4. the client's answer to noticePing: every stream it opened before it
//     read the GOAWAY has arrived, and is served;
//  5. the final GOAWAY, by the server, with the last stream it took.
//
// Each wait for an answer lasts at most noticeBound.

// noticeBound is how long the drain waits for the client to answer each
// of its PINGs: a client that never does is sent away all the same.
const noticeBound = time.Second

// nextProtoH2C is net/http's TLSNextProto key for h2c connections.
const nextProtoH2C = "unencrypted_http2"

// failListener accepts nothing: a hub's Serve sets HTTP/2 up and returns.
type failListener struct{}

var errNoAccept = errors.New("drain: the HTTP/2 hub accepts nothing")

func (failListener) Accept() (net.Conn, error) { return nil, errNoAccept }
func (failListener) Close() error              { return nil }
func (failListener) Addr() net.Addr            { return &net.TCPAddr{} }

// inTLS carries a net.Conn through an API that takes a *tls.Conn, as
// net/http hands an h2c connection to its HTTP/2 server.
type inTLS struct {
	net.Conn // nil: only UnencryptedNetConn is called
	c        net.Conn
}

func (p inTLS) UnencryptedNetConn() net.Conn { return p.c }

// http2Hub makes the hubs of srv's HTTP/2 connections.
type http2Hub struct {
	srv *http.Server
	t   *tracker
}

// newHub returns a hub configured as srv is for HTTP/2, and its HTTP/2
// server's handover for h2c (nil if it has none).
func (g *http2Hub) newHub() (*http.Server, func(*http.Server, *tls.Conn, http.Handler)) {
	hub := &http.Server{
		Protocols:   g.srv.Protocols,
		HTTP2:       g.srv.HTTP2,
		IdleTimeout: g.srv.IdleTimeout,
		ReadTimeout: g.srv.ReadTimeout,
		ErrorLog:    g.srv.ErrorLog,
	}
	hub.Serve(failListener{})
	return hub, hub.TLSNextProto[nextProtoH2C]
}

// serveHTTP2 routes srv's HTTP/2 connections through h2conns and hubs,
// marking each in t. It leaves srv as it is, and returns false, when srv
// has TLSNextProto set (the caller's own protocols, or HTTP/2 turned off
// with an empty map), has no HTTP/2, or net/http has no h2c handover.
func serveHTTP2(srv *http.Server, t *tracker) bool {
	if srv.TLSNextProto != nil {
		return false
	}
	g := &http2Hub{srv: srv, t: t}
	probe, h2c := g.newHub()
	if h2c == nil {
		return false
	}
	srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){
		nextProtoH2C: func(hs *http.Server, tc *tls.Conn, h http.Handler) {
			u, ok := tc.NetConn().(interface{ UnencryptedNetConn() net.Conn })
			if !ok {
				tc.Close()
				return
			}
			nc := u.UnencryptedNetConn()
			c := newH2Conn(nc, nc, false)
			g.serve(hs, c, c, h)
		},
	}
	if _, ok := probe.TLSNextProto["h2"]; ok {
		srv.TLSNextProto["h2"] = func(hs *http.Server, tc *tls.Conn, h http.Handler) {
			c := newH2Conn(tc, tc, true)
			g.serve(hs, c, h2tlsConn{h2conn: c, tls: tc}, h)
		}
	}
	// srv.Shutdown by the caller still tells them to go.
	srv.RegisterOnShutdown(t.goAwayHTTP2)
	return true
}

// serve serves c (nc: c itself, or with its TLS state) with an HTTP/2
// server of its own, until the connection ends.
func (g *http2Hub) serve(hs *http.Server, c *h2conn, nc net.Conn, h http.Handler) {
	hub, h2c := g.newHub()
	c.final = func() { hub.Shutdown(context.Background()) }
	g.t.markHTTP2(c)
	defer close(c.done)
	h2c(hs, tls.Client(inTLS{c: nc}, nil), h)
}
