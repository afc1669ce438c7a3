package drain_test

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/batonhq/baton/drain"
	"github.com/batonhq/baton/drain/draintest"
)

// smallSendBuffer gives every connection ln accepts a small send buffer,
// so that a client that does not read stops the server's writes early.
type smallSendBuffer struct{ net.Listener }

func (l smallSendBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	return c, err
}

// dialSmall is connectRaw with a small receive buffer.
func dialSmall(t *testing.T, addr string, cfg *tls.Config) *rawClient {
	t.Helper()
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	return connectRaw(t, d, addr, cfg)
}

// A response whose header block spans many frames, on its way to a
// client that reads slowly as the drain begins: the drain's PING waits
// for the end of the block (RFC 9113 §6.10: no other frame may come
// inside one), and the client reads every frame without a connection
// error.
func TestHeaderBlockNotSplitByDrain(t *testing.T) {
	c := draintest.SelfSigned(t)
	clients := map[string]*tls.Config{
		"tls": {RootCAs: c.Pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}},
	}
	big := strings.Repeat("0123456789abcdef", 32<<10) // 512 KiB: 20 frames or more
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", big)
	})
	for _, tt := range http2Setups(c) {
		t.Run(tt.name, func(t *testing.T) {
			ln := listen(t)
			s := startServer(t, tt.listener(smallSendBuffer{dup(t, ln)}), "old", drain.Options{Timeout: 10 * time.Second}, h, tt.configure)
			rc := dialSmall(t, ln.Addr().String(), clients[tt.name])
			rc.get(1)
			var got []http2.FrameType
			read := func() http2.Frame {
				f, err := rc.fr.ReadFrame()
				if err != nil {
					t.Fatalf("after frames %v: %v", got, err)
				}
				got = append(got, f.Header().Type)
				if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
					rc.fr.WritePing(true, p.Data)
				}
				return f
			}
			// The start of the block; the server waits to write the rest.
			for read().Header().Type != http2.FrameHeaders {
			}
			s.cancel()
			waitFor(t, s.stopping, "STOPPING=1")
			for {
				if g, ok := read().(*http2.GoAwayFrame); ok && g.LastStreamID != 1<<31-1 {
					break // the final one
				}
			}
			if i := slices.Index(got, http2.FramePing); i < 0 || slices.Contains(got[i:], http2.FrameContinuation) {
				t.Errorf("frames %v: want the drain's PING after the header block", got)
			}
		})
	}
}

// Clients that never read hold the server's writes, and with them the
// lock the drain's own frames wait for, in the middle of a DATA frame or
// of a header block: the drain still ends at its deadline.
func TestHTTP2DeadlineWithClientsThatNeverRead(t *testing.T) {
	c := draintest.SelfSigned(t)
	clients := map[string]*tls.Config{
		"tls": {RootCAs: c.Pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}},
	}
	body := []byte(strings.Repeat("x", 1<<20))
	big := strings.Repeat("0123456789abcdef", 32<<10)
	entered := make(chan struct{}, 8)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		if r.URL.Query().Has("header") {
			w.Header().Set("X-Big", big)
		}
		w.Write(body)
	})
	const timeout = 500 * time.Millisecond
	for _, tt := range http2Setups(c) {
		t.Run(tt.name, func(t *testing.T) {
			ln := listen(t)
			s := startServer(t, tt.listener(smallSendBuffer{dup(t, ln)}), "old", drain.Options{Timeout: timeout}, h, tt.configure)
			for _, path := range []string{"/", "/?header"} {
				rc := dialSmall(t, ln.Addr().String(), clients[tt.name])
				rc.fr.WriteWindowUpdate(0, 1<<30)
				rc.getPath(1, path)
				waitFor(t, entered, "the request for "+path)
			}
			began := time.Now()
			err := s.drain(t)
			if took := time.Since(began); !errors.Is(err, drain.ErrForced) || took > timeout+2*time.Second {
				t.Errorf("drain took %v (deadline %v): %v; want it forced at its deadline", took, timeout, err)
			}
		})
	}
}
