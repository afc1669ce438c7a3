package lifecycle

import (
	"errors"
	"fmt"
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

// The balancing mode cannot change on a reload, not even from auto to
// the mode auto chose: the reload would say nothing else.
func TestReloadKeepsBalance(t *testing.T) {
	for _, tt := range []struct{ was, next string }{
		{config.BalanceShared, config.BalanceRoundRobin},
		{config.BalanceAuto, config.BalanceReusePort},
		{config.BalanceShared, config.BalanceAuto},
	} {
		h := newHarness(t, testConfig(t, func(c *config.Config) { c.Worker.Balance = tt.was }), Options{})
		h.serve()
		h.env.nextCfg = testConfig(t, func(c *config.Config) { c.Worker.Balance = tt.next })
		rep, got := reply()
		h.step(Reload{Reply: rep})
		if want := fmt.Sprintf("worker.balance: changed from %q to %q", tt.was, tt.next); len(*got) != 1 || (*got)[0].Err == nil || !strings.Contains((*got)[0].Err.Error(), want) {
			t.Fatalf("%s to %s: reply %+v", tt.was, tt.next, *got)
		}
		h.none("start ")
	}
}

// The shell learns which worker a new one replaces while that one still
// runs (it may have stopped accepting: reuseport hands its replacement
// the listener it held), and that a reload's or a crash's replaces none.
func TestSpawnSaysWhatItReplaces(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	pids := h.serve()
	h.notify(pids[0], "STOPPING=1")
	h.want("start g1 s0 = 103")
	h.step(Restart{Slot: 1})
	h.want("start g1 s1 = 104")
	h.ready(103, 104)
	h.exit(103, "exit status 1")
	h.advance(time.Second)
	h.step(Reload{})
	h.ready(h.started()...)
	for pid, want := range map[int]int{103: 101, 104: 102, 105: 0, 106: 0, 107: 0} {
		if got := h.env.replaces[pid]; got != want {
			t.Errorf("worker %d was started to replace %d, want %d (%v)", pid, got, want, h.env.replaces)
		}
	}
}

// auto takes reuseport where every TCP listener can have a socket per
// worker, else shared, and says why in words that name the fix.
func TestChooseBalance(t *testing.T) {
	bound := func(name string) BalanceSocket { return BalanceSocket{Name: name, TCP: true} }
	unix := BalanceSocket{Name: "admin"}
	fromSystemd := func(reusePort bool, beside string) BalanceSocket {
		return BalanceSocket{Name: "http", TCP: true, From: "systemd", Kind: "tcp", ReusePort: reusePort, Beside: beside}
	}
	for _, tt := range []struct {
		name   string
		socks  []BalanceSocket
		parent string
		mode   string
		why    string
	}{
		{"baton binds them", []BalanceSocket{bound("http"), bound("api")}, "", config.BalanceReusePort, "every TCP listener can have a socket per worker"},
		{"and a unix one", []BalanceSocket{bound("http"), unix}, "", config.BalanceReusePort, `(unix listener "admin" shared)`},
		{"unix only", []BalanceSocket{unix}, "", config.BalanceShared, "no TCP listener"},
		{"datagrams only", nil, "", config.BalanceShared, "no stream listener"},
		{"systemd with ReusePort=yes", []BalanceSocket{fromSystemd(true, "")}, "", config.BalanceReusePort, "every TCP listener"},
		{"systemd without", []BalanceSocket{bound("api"), fromSystemd(false, "")}, "", config.BalanceShared,
			`listener "http" came from systemd without SO_REUSEPORT (set ReusePort=yes in its .socket unit)`},
		{"another user's group", []BalanceSocket{fromSystemd(true, "bind: address already in use")}, "", config.BalanceShared,
			"baton cannot bind sockets beside it: bind: address already in use"},
		{"fd store", []BalanceSocket{{Name: "http", TCP: true, From: "fd store", Kind: "tcp"}}, "", config.BalanceShared,
			`listener "http" came from fd store without SO_REUSEPORT`},
		{"mptcp", []BalanceSocket{{Name: "http", TCP: true, From: "systemd", Kind: "mptcp", ReusePort: true}}, "", config.BalanceShared, "MPTCP"},
		{"unix for tcp://", []BalanceSocket{{Name: "http", TCP: true, From: "systemd", Kind: "unix"}}, "", config.BalanceShared, "as a unix socket, not TCP"},
		{"every refusal", []BalanceSocket{fromSystemd(false, ""), {Name: "api", TCP: true, From: "systemd", Kind: "mptcp"}}, "", config.BalanceShared,
			`listener "http" came from systemd without SO_REUSEPORT (set ReusePort=yes in its .socket unit); listener "api" came from systemd as an MPTCP socket`},
		{"a self-upgrade keeps shared", []BalanceSocket{bound("http")}, config.BalanceShared, config.BalanceShared, "a self-upgrade keeps the mode"},
		{"and round-robin", []BalanceSocket{fromSystemd(false, "")}, config.BalanceRoundRobin, config.BalanceRoundRobin, "took over from"},
	} {
		mode, why := ChooseBalance(tt.socks, tt.parent)
		if mode != tt.mode || !strings.Contains(why, tt.why) {
			t.Errorf("%s: %s because %q; want %s because %q", tt.name, mode, why, tt.mode, tt.why)
		}
	}
}

// A serving worker found stuck (round-robin) leaves the routes at once, is
// shown stuck and counted, and is replaced new first, then drained.
func TestStuckWorker(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	pids := h.serve()
	h.step(Stuck{PID: pids[0], Unread: 5 * time.Second})
	h.want("start g1 s0 = 103", "route ready=[102] slots=[0 1]")
	if !strings.Contains(h.logs.String(), `msg="replacing worker" slot=0 pid=101 generation=1 why="left a connection unread on its channel for 5s (worker.channel_timeout)"`) {
		t.Errorf("no replacement logged:\n%s", h.logs)
	}
	snap := h.m.Snapshot()
	if snap.Procs[0].PID != 101 || snap.Procs[0].State != "stuck" || snap.Counts.Restarts["stuck"] != 1 {
		t.Errorf("snapshot %+v, want worker 101 stuck and 1 restart for it", snap)
	}
	// Said twice, it is one restart.
	h.step(Stuck{PID: pids[0], Unread: 6 * time.Second})
	h.none("start ", "signal ")
	h.ready(103)
	h.want("signal 101 SIGTERM group", "route ready=[103 102] slots=[0 1]")
	// Its drain deadline counts from when it was found stuck.
	h.advance(testConfig(t, nil).Worker.DrainTimeout.Std())
	h.want("signal 101 SIGKILL group")
	h.exit(101, "killed by SIGKILL")
	if snap := h.m.Snapshot(); len(snap.Procs) != 2 || snap.Restarts != 1 {
		t.Errorf("after it exited: %+v", snap)
	}
}

// A worker that is not serving when found stuck is drained, not
// replaced: one draining already only shows it; a reload's new worker
// fails its reload when it exits; a worker unknown is ignored.
func TestStuckWorkerNotServing(t *testing.T) {
	t.Run("draining", func(t *testing.T) {
		h := newHarness(t, testConfig(t, nil), Options{})
		pids := h.serve()
		h.notify(pids[0], "STOPPING=1")
		h.take()
		h.step(Stuck{PID: pids[0], Unread: 5 * time.Second})
		h.none("start ", "signal ")
		if snap := h.m.Snapshot(); snap.Procs[0].State != "stuck" || snap.Counts.Restarts["stuck"] != 0 {
			t.Errorf("snapshot %+v, want worker 101 stuck, no restart for it", snap)
		}
	})
	t.Run("reload", func(t *testing.T) {
		h := newHarness(t, testConfig(t, nil), Options{})
		h.serve()
		rep, got := reply()
		h.step(Reload{Reply: rep})
		nw := h.started()
		h.ready(nw[0])
		h.take()
		h.step(Stuck{PID: nw[0], Unread: 5 * time.Second})
		h.want(fmt.Sprintf("signal %d SIGTERM group", nw[0]), "route ready=[101 102]")
		h.exit(nw[0], "exit status 0")
		if len(*got) != 1 || !errors.Is((*got)[0].Err, errRolledBack) {
			t.Errorf("reply %+v, want rolled back", *got)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		h := newHarness(t, testConfig(t, nil), Options{})
		h.serve()
		h.step(Stuck{PID: 999, Unread: 5 * time.Second})
		h.none("start ", "signal ", "route ")
	})
}

// When baton says it is ready (READY=1, "all workers ready"), every ready
// worker already gets connections: a client that connects at that moment
// (systemd's After=, a load balancer watching the log) must not find the
// last worker's socket left out, or its keep-alive connections all stay
// on the others.
func TestRoutedBeforeReady(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	pids := h.start()
	h.ready(pids...)
	routed := ""
	for _, a := range h.env.acts {
		if strings.HasPrefix(a, "route ") {
			routed = a
		}
		if strings.HasPrefix(a, "systemd READY=1") {
			break
		}
	}
	if want := fmt.Sprintf("route ready=%v", pids); !strings.HasPrefix(routed, want) {
		t.Errorf("the last route before READY=1 is %q, want %q...; actions: %q", routed, want, h.env.acts)
	}
}
