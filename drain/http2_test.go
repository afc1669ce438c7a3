package drain_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/batonhq/baton/drain"
	"github.com/batonhq/baton/drain/draintest"
	"github.com/batonhq/baton/loadtest"
)

// http2Setup is a server of HTTP/2 as the tests run it: over TLS with
// ALPN, or h2c.
type http2Setup struct {
	name      string
	listener  func(net.Listener) net.Listener
	configure func(*http.Server)
}

func http2Setups(c draintest.Cert) []http2Setup {
	return []http2Setup{
		{
			name: "tls",
			listener: func(l net.Listener) net.Listener {
				return tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{c.Pair}, NextProtos: []string{"h2", "http/1.1"}})
			},
			configure: func(*http.Server) {},
		},
		{
			name:     "h2c",
			listener: func(l net.Listener) net.Listener { return l },
			configure: func(srv *http.Server) {
				srv.Protocols = new(http.Protocols)
				srv.Protocols.SetHTTP1(true)
				srv.Protocols.SetUnencryptedHTTP2(true)
			},
		},
	}
}

// HTTP/2 clients (TLS with ALPN, and h2c) that keep their connection busy
// move to the newer server as soon as the old one drains: each of its
// connections gets a GOAWAY, finishes its streams and closes, so the old
// server's drain ends long before its deadline, and no request fails.
func TestDrainHTTP2(t *testing.T) {
	c := draintest.SelfSigned(t)
	clients := map[string]loadtest.Options{
		"tls": {Protocol: loadtest.HTTP2, TLS: &tls.Config{RootCAs: c.Pool}},
		"h2c": {Protocol: loadtest.H2C},
	}
	for _, tt := range http2Setups(c) {
		t.Run(tt.name, func(t *testing.T) {
			ln := listen(t)
			opts := drain.Options{Timeout: 5 * time.Second}
			old := startServer(t, tt.listener(dup(t, ln)), "old", opts, nil, tt.configure)
			// An answer over HTTP/1 fails loadtest's HTTP/2 clients.
			o := clients[tt.name]
			o.Addr, o.Concurrency, o.Timeout = ln.Addr().String(), 8, 10*time.Second
			load, err := loadtest.Start(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			defer load.Stop()
			old.waitHits(t, 200)
			young := startServer(t, tt.listener(dup(t, ln)), "new", opts, nil, tt.configure)
			began := time.Now()
			err = old.drain(t)
			took := time.Since(began)
			young.waitHits(t, 200) // the clients moved
			r := load.Stop()
			t.Logf("%s: the old server drained in %v: %v; old answered %d, new %d",
				tt.name, took, r, old.hits.Load(), young.hits.Load())
			if err != nil {
				t.Errorf("the old server's drain: %v (its HTTP/2 connections did not leave by themselves)", err)
			}
			if r.Failed() != 0 {
				t.Errorf("%d requests failed (an answer over HTTP/1 among them), the first: %v", r.Failed(), r.Samples)
			}
		})
	}
}

// A handler that hijacked its connection learns from Draining that the
// drain began, ends its conversation, and Serve waits for it to return.
func TestDrainingTellsHijackers(t *testing.T) {
	var said atomic.Bool
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		begun := drain.Draining(r.Context())
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\nhello\n")
		rw.Flush()
		<-begun
		rw.WriteString("bye\n") // the protocol's own goodbye
		rw.Flush()
		rw.ReadString('\n') // the client's answer
		said.Store(true)
	})
	ln := listen(t)
	s := startServer(t, dup(t, ln), "old", drain.Options{Timeout: 5 * time.Second}, h)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
	buf := make([]byte, 4096)
	var got string
	for !strings.HasSuffix(got, "hello\n") {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read %q: %v", got, err)
		}
		got += string(buf[:n])
	}
	if drain.Draining(t.Context()) != nil {
		t.Error("Draining of a context that no Serve made is not nil")
	}
	s.cancel()
	got = ""
	for !strings.HasSuffix(got, "bye\n") {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after the drain began the client read %q, want the handler's goodbye: %v", got, err)
		}
		got += string(buf[:n])
	}
	// The handler is still running (it waits for the answer): Serve
	// must not have returned, and does not within a while.
	select {
	case err := <-s.done:
		t.Fatalf("Serve returned (%v) while the hijacking handler still ran", err)
	case <-time.After(100 * time.Millisecond):
	}
	io.WriteString(c, "ok\n")
	if err := s.drain(t); err != nil {
		t.Errorf("drain: %v", err)
	}
	if !said.Load() {
		t.Error("Serve returned before the hijacking handler did")
	}
}

// Serve hands every HTTP/2 connection to net/http's HTTP/2 server by a
// way of its own (http2.go): what the client and the handler see must be
// what net/http alone gives them. r.TLS, the SETTINGS that srv.HTTP2 and
// MaxHeaderBytes make, ConnContext, the connection and states ConnState
// gets, and IdleTimeout's GOAWAY.
func TestHTTP2AsNetHTTPAlone(t *testing.T) {
	c := draintest.SelfSigned(t)
	clients := map[string]*tls.Config{
		"tls": {RootCAs: c.Pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}},
	}
	alone := func(srv *http.Server, ln net.Listener) (stop func()) {
		go srv.Serve(ln)
		return func() { srv.Close() }
	}
	drained := func(srv *http.Server, ln net.Listener) (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- drain.Serve(ctx, srv, ln, drain.Options{Notify: func(string) error { return nil }}) }()
		return func() { cancel(); <-done }
	}
	for _, tt := range http2Setups(c) {
		t.Run(tt.name, func(t *testing.T) {
			want := http2View(t, tt, clients[tt.name], alone)
			if got := http2View(t, tt, clients[tt.name], drained); got != want {
				t.Errorf("under Serve:\n%s\n\nnet/http alone:\n%s", got, want)
			}
		})
	}
}

type viewKey struct{}

// http2View serves HTTP/2 with serve and setup, makes one request with a
// client of frames, waits for IdleTimeout's GOAWAY and says what the
// server and the client saw. ConnState gets the connection Serve wraps.
func http2View(t *testing.T, setup http2Setup, cfg *tls.Config, serve func(*http.Server, net.Listener) (stop func())) string {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	see := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, fmt.Sprintf(format, args...))
	}
	closed := make(chan struct{})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			alpn := "no TLS"
			if r.TLS != nil {
				alpn = r.TLS.NegotiatedProtocol
			}
			see("request %s, TLS: %s, ConnContext: %v", r.Proto, alpn, r.Context().Value(viewKey{}))
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, viewKey{}, "set")
		},
		ConnState: func(c net.Conn, s http.ConnState) {
			if w, ok := c.(interface{ NetConn() net.Conn }); ok {
				if _, ok := c.(*tls.Conn); !ok {
					c = w.NetConn() // Serve's wrapper
				}
			}
			see("%s %T", s, c)
			if s == http.StateClosed {
				close(closed)
			}
		},
		MaxHeaderBytes: 4096,
		IdleTimeout:    100 * time.Millisecond,
		HTTP2:          &http.HTTP2Config{MaxConcurrentStreams: 7, MaxReadFrameSize: 1 << 20, MaxReceiveBufferPerStream: 1 << 17},
		ErrorLog:       testLogger(t),
	}
	setup.configure(srv)
	ln := listen(t)
	stop := serve(srv, setup.listener(ln))
	defer stop()
	rc := connectRaw(t, new(net.Dialer), ln.Addr().String(), cfg)
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.c.SetReadDeadline(time.Now().Add(eventTimeout))
	rc.get(1)
	var client []string
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("read: %v; saw %q", err, seen)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				var s []string
				f.ForeachSetting(func(x http2.Setting) error { s = append(s, x.String()); return nil })
				client = append(client, "SETTINGS "+strings.Join(s, " "))
			}
		case *http2.MetaHeadersFrame:
			client = append(client, "response "+f.PseudoValue("status"))
		case *http2.GoAwayFrame:
			client = append(client, fmt.Sprintf("GOAWAY %d %v", f.LastStreamID, f.ErrCode))
			rc.c.Close()
			waitFor(t, closed, "StateClosed")
			mu.Lock()
			defer mu.Unlock()
			return "server: " + strings.Join(seen, "; ") + "\nclient: " + strings.Join(client, "; ")
		}
	}
}
