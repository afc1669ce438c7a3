package drain

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
)

// HTTP/2 has its own answer to the keep-alive race: GOAWAY, which tells a
// client the last stream the server will process, so that it sends the
// rest on a new connection. net/http sends it from one place only, the
// hook its HTTP/2 server registers with Server.RegisterOnShutdown, and
// Shutdown also closes idle HTTP/1 connections at once, which Serve must
// not do. So Serve has net/http set up its HTTP/2 server on a server of its
// own that never serves (goAway.hub) and hands srv's HTTP/2 connections to
// it (TLSNextProto, for "h2" by ALPN and for h2c, "unencrypted_http2"):
// the hub's Shutdown then runs only that hook, and every HTTP/2
// connection gets a GOAWAY, finishes its streams and closes. The
// connections are still srv's: net/http passes srv to the HTTP/2 server,
// which takes its settings (HTTP2, timeouts, ConnState, ErrorLog) from it.

// goAway sends GOAWAY to srv's HTTP/2 connections.
type goAway struct {
	hub *http.Server
}

// failListener accepts nothing: the hub's Serve sets HTTP/2 up and returns.
type failListener struct{}

var errNoAccept = errors.New("drain: the HTTP/2 hub accepts nothing")

func (failListener) Accept() (net.Conn, error) { return nil, errNoAccept }
func (failListener) Close() error              { return nil }
func (failListener) Addr() net.Addr            { return &net.TCPAddr{} }

// newGoAway routes srv's HTTP/2 connections through a hub, marking each
// in t as HTTP/2 (not closed when idle: GOAWAY ends it). It returns nil,
// leaving srv as it is, when srv has TLSNextProto set (the caller's own
// protocols, or HTTP/2 turned off with an empty map) or no HTTP/2.
func newGoAway(srv *http.Server, t *tracker) *goAway {
	if srv.TLSNextProto != nil {
		return nil
	}
	hub := &http.Server{
		Protocols:   srv.Protocols,
		HTTP2:       srv.HTTP2,
		IdleTimeout: srv.IdleTimeout,
		ReadTimeout: srv.ReadTimeout,
		ErrorLog:    srv.ErrorLog,
	}
	hub.Serve(failListener{})
	if len(hub.TLSNextProto) == 0 {
		return nil
	}
	srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	for proto, serve := range hub.TLSNextProto {
		srv.TLSNextProto[proto] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
			// ConnState saw c, or for h2c the connection c stands in for.
			var key net.Conn = c
			if u, ok := c.NetConn().(interface{ UnencryptedNetConn() net.Conn }); ok {
				key = u.UnencryptedNetConn()
			}
			t.markHTTP2(key)
			serve(hs, c, h)
		}
	}
	g := &goAway{hub: hub}
	// srv.Shutdown by the caller still tells them to go.
	srv.RegisterOnShutdown(g.send)
	return g
}

// send tells every HTTP/2 connection open now to go; it may be called
// again for those that came since (each gets one GOAWAY).
func (g *goAway) send() {
	if g != nil {
		g.hub.Shutdown(context.Background())
	}
}
