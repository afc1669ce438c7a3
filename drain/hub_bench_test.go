package drain

import (
	"crypto/tls"
	"net"
	"net/http"
	"testing"
)

// BenchmarkHub is the HTTP/2 server of its own that every HTTP/2
// connection gets (docs/protocols.md).
func BenchmarkHub(b *testing.B) {
	g := &http2Hub{srv: &http.Server{}, t: newTracker(0)}
	b.ReportAllocs()
	for b.Loop() {
		if _, h2c := g.newHub(); h2c == nil {
			b.Fatal("no h2c handover")
		}
	}
}

// BenchmarkHTTP2Conn is all that Serve adds to an HTTP/2 connection
// before net/http serves it: the hub, the h2conn and the handover.
func BenchmarkHTTP2Conn(b *testing.B) {
	g := &http2Hub{srv: &http.Server{}, t: newTracker(0)}
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	b.ReportAllocs()
	for b.Loop() {
		hub, _ := g.newHub()
		c := newH2Conn(server, server, false)
		c.final = func() { hub.Shutdown(b.Context()) }
		tls.Client(inTLS{c: h2tlsConn{h2conn: c}}, nil)
	}
}
