package lifecycle

import (
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
)

// The Env learns where connections go: the ready workers, and the slots
// whose sockets must stay open.
func TestRoutes(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.start()
	h.want("route ready=[] slots=[0 1] shared=false")
	h.ready(101)
	h.want("route ready=[101] slots=[0 1]")
	h.ready(102)
	h.want("route ready=[101 102] slots=[0 1]")

	// A reload: the new workers join once ready, the old ones leave as
	// they are told to drain.
	h.step(Reload{})
	h.ready(103)
	h.want("route ready=[101 102 103] slots=[0 1]")
	h.ready(104)
	h.want("signal 101 SIGTERM", "route ready=[103 104] slots=[0 1]")

	// A crash keeps its slot: the replacement will take its socket.
	h.exit(103, "exit status 1")
	h.want("route ready=[104] slots=[0 1]")
	h.advance(time.Second)
	h.ready(h.started()...)
	h.want("route ready=[105 104] slots=[0 1]") // by slot

	// A scale down gives up the slots beyond the new count, in the step
	// that drains their workers.
	h.step(Scale{N: 1})
	h.want("signal 104 SIGTERM", "route ready=[105] slots=[0]")

	// While another baton uses the sockets, none may close.
	h.step(Reload{Upgrade: true})
	h.want("upgrade", "route ready=[105] slots=[0] shared=true")
	h.step(UpgradeDone{PID: 900})
	h.want("hand over to 900", "signal 105 SIGTERM", "route ready=[] slots=[] shared=true")
}

// With the restart budget spent (degrade), an empty slot stays empty: its
// socket is no longer held for a replacement.
func TestRoutesAfterGiveUp(t *testing.T) {
	h := degradedHarness(t)
	h.want("route ready=[102] slots=[1]")
}

// The balancing mode cannot change on a reload.
func TestReloadKeepsBalance(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.serve()
	h.env.nextCfg = testConfig(t, func(c *config.Config) { c.Worker.Balance = config.BalanceRoundRobin })
	rep, got := reply()
	h.step(Reload{Reply: rep})
	if len(*got) != 1 || (*got)[0].Err == nil || !strings.Contains((*got)[0].Err.Error(), `worker.balance: changed from "shared" to "round-robin"`) {
		t.Fatalf("reply %+v", *got)
	}
	h.none("start ")
}
