package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/internal/excerpt"
)

// rawRequest sends b as is on a new control connection and returns the
// answer line.
func rawRequest(t *testing.T, path string, b []byte) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), "\n") {
		c.(*net.UnixConn).CloseWrite()
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("no answer to %s: %v", excerpt.Quote(string(b)), err)
	}
	return line
}

// Every malformed request gets one error line naming what is wrong, and
// costs the service nothing: it answers the next request as before.
func TestControlRefusesMalformedRequests(t *testing.T) {
	h := startHarness(t, testConfig("serve", 1, nil))
	h.waitNote("READY=1")
	path := filepath.Join(h.dir, control.SocketName)
	for _, tt := range []struct{ name, req, want string }{
		{"empty", "", "control: no request (want one JSON line)"},
		{"not json", "reload please\n", "control: bad request: invalid character"},
		{"unknown field", `{"command":"stats","force":true}` + "\n", `control: bad request: json: unknown field "force"`},
		{"unknown command", `{"command":"explode"}` + "\n", `control: unknown command "explode"`},
		{"trailing data", `{"command":"stats"} and more` + "\n", `control: bad request: "and more" after the JSON object`},
		{"two objects", `{"command":"stats"}{"command":"reload"}` + "\n", `control: bad request: "{\"command\":\"reload\"}" after the JSON object`},
		{"too long", strings.Repeat(" ", control.MaxRequest+1), "control: request longer than 4096 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			line := rawRequest(t, path, []byte(tt.req))
			var r control.Response
			if err := json.Unmarshal([]byte(line), &r); err != nil || r.OK || !strings.HasPrefix(r.Error, tt.want) || strings.Contains(r.Error, "\n") {
				t.Errorf("answer %q (%v), want one error starting %q", line, err, tt.want)
			}
		})
	}
	if st := h.stats(); st.Generation != 1 || st.Workers != 1 || st.Reloading {
		t.Errorf("after the bad requests: %+v, want generation 1 serving, no reload", st)
	}
}

// Idle connections take at most control.MaxConns descriptors of baton's:
// each one more is answered "busy" and closed at once, and once the idle
// ones are gone, requests are answered again.
func TestControlConnectionsAreCapped(t *testing.T) {
	h := startHarness(t, testConfig("serve", 1, nil))
	h.waitNote("READY=1")
	path := filepath.Join(h.dir, control.SocketName)
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := fds()
	const idle = 300
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idle {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	// The clients beyond the cap were refused, saying why; the others
	// are still being served (waiting for their request).
	refused := 0
	for _, c := range conns[control.MaxConns:] {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		var r control.Response
		if err == nil && json.Unmarshal([]byte(line), &r) == nil && strings.HasPrefix(r.Error, "control: busy: 64 requests are being served") {
			refused++
		}
	}
	if refused < idle-2*control.MaxConns {
		t.Errorf("%d of %d clients beyond the cap were told baton is busy", refused, idle-control.MaxConns)
	}
	// Baton and the test share this process: the clients hold their
	// descriptors here, baton at most control.MaxConns more.
	if got := fds() - before - idle; got > control.MaxConns+4 {
		t.Errorf("with %d idle clients baton holds %d more descriptors, want at most %d", idle, got, control.MaxConns)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	// The served ones end when baton reads their end of file.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := control.Ask(ctx, path, control.Request{Command: "stats"})
		cancel()
		if err == nil && r.Stats.Generation == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats after the idle clients left: %v", err)
		}
	}
}
