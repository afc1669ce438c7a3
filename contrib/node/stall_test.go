package node

import (
	"io"
	"net/http"
	"os/exec"
	"syscall"
	"testing"

	"github.com/batonhq/baton/drain/draintest"
)

// A keep-alive client whose next request reaches the worker while its
// event loop stands still, after the SIGTERM that came during the same
// stall, gets it answered. The connection has been idle for longer than
// the grace by the time the loop runs again, so a drain that swept idle
// connections before reading what had arrived would close it; libuv runs
// signal watchers last in each poll ("Run signal watchers last", in its
// uv__io_poll), so baton.js reads the request before its SIGTERM handler
// sweeps.
func TestStalledLoopServesWhatArrived(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skipf("node is not installed: %v", err)
	}
	ln, s := draintest.Listen(t, "http")
	w := draintest.Start(t, []string{"node", "testdata/stall.js"}, []draintest.Socket{s})
	w.Serving(t, "node: serving on ")
	addr := ln.Addr().String()
	c, br := draintest.KeepAlive(t, addr) // idle from here on
	defer c.Close()

	staller := draintest.Dial(t, addr)
	defer staller.Close()
	// Longer than the grace (1 s): c is idle past it when the loop runs
	// again. The rest of the margin is for this test's own steps below,
	// which must come within the stall.
	if _, err := io.WriteString(staller, "GET /stall?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	w.Serving(t, "stall: begins")
	w.Signal(t, syscall.SIGTERM)
	// Sent after the signal, both while the loop stands still. Read
	// first, it is answered as any request before the drain; the
	// connection is closed once idle for the grace.
	if resp := draintest.Request(t, c, br); resp.StatusCode != http.StatusOK {
		t.Errorf("request sent during the stall: status %d, want 200", resp.StatusCode)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the answer: read %v, want EOF from the worker closing the connection", err)
	}
	if st := w.Wait(t); st != 0 {
		t.Errorf("exit status %d after the drain, want 0", st)
	}
}
