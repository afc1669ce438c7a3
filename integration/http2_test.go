package integration

import (
	"crypto/tls"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/drain/draintest"
	"github.com/batonhq/baton/loadtest"
)

// reloads reloads b n times, calling served after each (to wait for the
// load to go on).
func reloads(t *testing.T, b *configBaton, n int, served func()) {
	t.Helper()
	for i := range n {
		if code, out := b.reloadCmd(t); code != 0 {
			t.Fatalf("reload %d: exit %d: %s", i+1, code, out)
		}
		served()
	}
}

// reDrained is baton's line for a generation gone, with how long its
// drain took.
var reDrained = regexp.MustCompile(`msg="generation (\d+) drained".* after=(\S+)`)

// protocolReloads puts 32 clients of o (Addr is b's) on b, reloads it 10
// times under them and returns the load's result once every replaced
// generation has drained, with the drain time of each. A protocol with
// GOAWAY (HTTP/2, gRPC) must see every replaced generation gone within
// half the drain deadline (10 s): its clients moved by GOAWAY, not by the
// deadline. (It takes under a second on an idle machine, over one
// when 32 TLS clients reconnect on a loaded one.)
func protocolReloads(t *testing.T, b *configBaton, o loadtest.Options) loadtest.Result {
	t.Helper()
	ctx := withTimeout(t, 2*time.Minute)
	o.Addr, o.Concurrency, o.Timeout = b.addr, 32, 10*time.Second
	g, err := loadtest.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	waitServed(t, g, 500)
	reloads(t, b, 10, func() { waitServed(t, g, 300) })
	// The last generation replaced has drained too.
	b.out.waitCount(reDrained, 10, 30*time.Second)
	r := g.Stop()
	var drains []string
	for _, m := range reDrained.FindAllStringSubmatch(b.out.String(), -1) {
		drains = append(drains, m[2])
		d, err := time.ParseDuration(m[2])
		if err != nil {
			t.Fatalf("generation %s drained after %q: %v", m[1], m[2], err)
		}
		if o.Protocol != loadtest.WebSocket && d > 5*time.Second {
			t.Errorf("generation %s took %s to drain, want under half the 10s drain deadline", m[1], m[2])
		}
	}
	t.Logf("10 reloads: %v; generations drained after %s", r, strings.Join(drains, ", "))
	for _, s := range r.Samples {
		t.Logf("failure: %s", s)
	}
	if r.Failed() != 0 {
		t.Errorf("%d of %d requests failed", r.Failed(), r.Requests)
	}
	return r
}

// HTTP/2 under baton, over TLS (ALPN) and h2c, with the hello worker on
// drain: 10 reloads under 32 clients, each on a connection of its own
// that it keeps busy (and for h2c also a connection per request), fail no
// request, and every replaced generation is gone within a second.
func TestHTTP2UnderBaton(t *testing.T) {
	c := draintest.SelfSigned(t)
	cert, key := c.Files(t)
	pool := c.Pool
	for _, tt := range []struct {
		o    loadtest.Options
		args []string
	}{
		{loadtest.Options{Protocol: loadtest.HTTP2, TLS: &tls.Config{RootCAs: pool}}, []string{"-cert", cert, "-key", key}},
		{loadtest.Options{Protocol: loadtest.H2C}, []string{"-h2c"}},
		{loadtest.Options{Protocol: loadtest.H2C, Mode: loadtest.PerRequest}, []string{"-h2c"}},
	} {
		t.Run(tt.o.Protocol.String()+"/"+tt.o.Mode.String(), func(t *testing.T) {
			b := startConfigBaton(t, func(addr string) string {
				return batonConfig(addr, 2, append([]string{bin.hello}, tt.args...), "")
			})
			protocolReloads(t, b, tt.o)
		})
	}
}

// gRPC under baton, with the greeter worker on grpcdrain: 10 reloads
// under 32 clients making unary calls, each on a connection of its own
// (and, the other mode, a connection per call), fail no call, and every
// replaced generation is gone within a second.
func TestGRPCUnderBaton(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			b := startConfigBaton(t, func(addr string) string {
				return batonConfig(addr, 2, []string{bin.greeter}, "")
			})
			protocolReloads(t, b, loadtest.Options{Protocol: loadtest.GRPC, Mode: mode})
		})
	}
}

// WebSocket sessions under baton (hello's /ws echo): 10 reloads under 32
// clients end every session of a replaced worker with a close frame from
// it, none by a reset or an end without one.
func TestWebSocketsUnderBaton(t *testing.T) {
	b := startConfigBaton(t, hellos(2, ""))
	r := protocolReloads(t, b, loadtest.Options{Protocol: loadtest.WebSocket, Path: "/ws"})
	t.Logf("%d messages echoed, %d sessions closed by the server with a close frame", r.OK, r.CloseFrames)
	if r.CloseFrames < 32 {
		t.Errorf("%d sessions closed by a draining worker, want at least the 32 clients' first", r.CloseFrames)
	}
}
