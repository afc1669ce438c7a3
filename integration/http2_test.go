package integration

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/drain/draintest"
)

// certFiles writes a self-signed certificate for 127.0.0.1 and its key
// (PEM) into dir, and returns their paths and a pool that trusts it.
func certFiles(t *testing.T, dir string) (cert, key string, pool *x509.CertPool) {
	t.Helper()
	c := draintest.SelfSigned(t)
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, c.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, c.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key, c.Pool
}

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

// HTTP/2 under baton, over TLS (ALPN) and h2c, with the hello worker on
// drain: 10 reloads under 32 clients, each on a connection of its own
// that it keeps busy, fail no request, and every replaced generation is
// gone within a second (its clients moved by GOAWAY, not by the drain
// deadline of 10 s).
func TestHTTP2UnderBaton(t *testing.T) {
	dir := t.TempDir()
	cert, key, pool := certFiles(t, dir)
	for _, tt := range []struct {
		name      string
		args      []string
		scheme    string
		transport func() *http.Transport
	}{
		{"tls", []string{"-cert", cert, "-key", key}, "https", func() *http.Transport {
			return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
		}},
		{"h2c", []string{"-h2c"}, "http", func() *http.Transport {
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tr.Protocols.SetUnencryptedHTTP2(true)
			return tr
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := startConfigBaton(t, func(addr string) string {
				return batonConfig(addr, 2, append([]string{bin.hello}, tt.args...), "")
			})
			url := tt.scheme + "://" + b.addr + "/"
			load := draintest.StartHTTPLoad(32, func() *http.Client {
				return &http.Client{Transport: tt.transport(), Timeout: 10 * time.Second}
			}, url, "hello from pid ")
			defer load.Stop()
			load.WaitOK(t, 500)
			reloads(t, b, 10, func() { load.WaitOK(t, load.OK.Load()+300) })
			// The last generation replaced has drained too.
			b.out.waitCount(reDrained, 10, 30*time.Second)
			load.Stop()
			var drains []string
			for _, m := range reDrained.FindAllStringSubmatch(b.out.String(), -1) {
				drains = append(drains, m[2])
				if d, err := time.ParseDuration(m[2]); err != nil || d > time.Second {
					t.Errorf("generation %s took %s to drain, want under a second", m[1], m[2])
				}
			}
			t.Logf("%s: 10 reloads: %d ok, %d failed, %d over HTTP/1; generations drained after %s",
				tt.name, load.OK.Load(), load.Failed.Load(), load.NotHTTP2.Load(), strings.Join(drains, ", "))
			if load.Failed.Load() != 0 {
				t.Errorf("%d requests failed, the first: %v", load.Failed.Load(), load.FirstErr())
			}
			if load.NotHTTP2.Load() != 0 {
				t.Errorf("%d requests went over HTTP/1, want none", load.NotHTTP2.Load())
			}
		})
	}
}

// WebSocket sessions under baton (hello's /ws echo): 10 reloads under 32
// clients end every session of a replaced worker with a close frame from
// it, none by a reset or an end without one.
func TestWebSocketsUnderBaton(t *testing.T) {
	b := startConfigBaton(t, hellos(2, ""))
	load := draintest.StartWebSocketLoad(32, b.addr, "/ws")
	defer load.Stop()
	load.WaitOK(t, 500)
	reloads(t, b, 10, func() { load.WaitOK(t, load.OK.Load()+300) })
	b.out.waitCount(reDrained, 10, 30*time.Second)
	load.Stop()
	t.Logf("10 reloads: %d messages echoed, %d sessions closed by the server with a close frame, %d failed",
		load.OK.Load(), load.ServerClosed.Load(), load.Failed.Load())
	if load.Failed.Load() != 0 {
		t.Errorf("%d sessions failed, the first: %v", load.Failed.Load(), load.FirstErr())
	}
	if load.ServerClosed.Load() < 32 {
		t.Errorf("%d sessions closed by a draining worker, want at least the 32 clients' first", load.ServerClosed.Load())
	}
}
