package node

import (
	"testing"
	"time"

	"github.com/batonhq/baton/drain/draintest"
)

// TestServer runs server.js through the checks every baton worker passes;
// it skips if node is not installed.
func TestServer(t *testing.T) {
	draintest.Conformance(t, draintest.Spec{
		Argv:      []string{"node", "server.js"},
		Serving:   "node: serving on ",
		Draining:  "node: draining",
		Forced:    "node: forced close",
		IdleGrace: time.Second,
	})
}
