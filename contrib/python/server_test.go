package python

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/drain/draintest"
)

var spec = draintest.Spec{
	Argv:      []string{"python3", "server.py"},
	Serving:   "python: serving on ",
	Draining:  "python: draining",
	Forced:    "python: forced close",
	IdleGrace: time.Second,
}

// TestServer runs server.py through the checks every baton worker passes;
// it skips if python3 is not installed.
func TestServer(t *testing.T) {
	draintest.Conformance(t, spec)
}

// TestNotify: READY=1 once serving, STOPPING=1 when the drain starts, to a
// NOTIFY_SOCKET given as a path or in the abstract namespace.
func TestNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprintf("abstract=%t", abstract), func(t *testing.T) {
			name, msgs := draintest.NotifySocket(t, abstract)
			_, s := draintest.Listen(t, "http")
			w := draintest.Start(t, spec.Argv, []draintest.Socket{s}, "NOTIFY_SOCKET="+name)
			for _, want := range []string{"READY=1", "STOPPING=1"} {
				select {
				case m := <-msgs:
					if m != want {
						t.Fatalf("notified %q, want %q", m, want)
					}
				case <-time.After(draintest.EventTimeout):
					t.Fatalf("no %s", want)
				}
				if want == "READY=1" {
					w.Signal(t, syscall.SIGTERM)
				}
			}
			if st := w.Wait(t); st != 0 {
				t.Errorf("exit status %d, want 0", st)
			}
		})
	}
}
