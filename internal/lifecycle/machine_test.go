package lifecycle

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
)

func TestStartPromotesOnceAllReady(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	pids := h.start()
	if len(pids) != 2 {
		t.Fatalf("started %v, want 2 workers", pids)
	}
	h.ready(pids[0])
	h.none("systemd READY=1", "serving")
	h.ready(pids[1])
	h.want("systemd READY=1 STATUS=2/2 workers ready, generation 1", "serving")
	if s := h.m.Snapshot(); s.Generation != 1 || s.Workers != 2 {
		t.Errorf("snapshot %+v", s)
	}
}

func TestStartNotReadyInTime(t *testing.T) {
	h := newHarness(t, testConfig(t, func(c *config.Config) { c.Reload.Timeout = config.Duration(time.Second) }), Options{})
	pids := h.start()
	h.ready(pids[0])
	h.advance(time.Second)
	h.want("signal 101 SIGTERM group", "signal 102 SIGTERM group", "systemd STOPPING=1")
	for _, pid := range pids {
		h.exit(pid, "killed by SIGTERM")
	}
	if !h.m.Done() {
		t.Fatal("not done once every worker exited")
	}
	err := h.m.Finish()
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "worker 1 (pid 102) did not become ready within 1s") {
		t.Errorf("err = %v", err)
	}
}

func TestReloadPromotesThenDrains(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	old := h.serve()
	rep, got := reply()
	h.step(Reload{Reply: rep})
	h.want("systemd RELOADING=1", "open store=true", "start g2 s0", "start g2 s1")
	nw := []int{103, 104}
	h.ready(nw[0])
	if len(*got) != 0 {
		t.Fatal("answered before the new generation was ready")
	}
	h.ready(nw[1])
	acts := h.take()
	for _, pid := range old {
		if s := signalsTo(acts, pid); len(s) != 1 || s[0] != "SIGTERM group" {
			t.Errorf("old worker %d got %v, want one SIGTERM", pid, s)
		}
	}
	if len(*got) != 1 || (*got)[0].Err != nil || (*got)[0].Generation != 2 {
		t.Fatalf("reply %+v", *got)
	}
	h.exit(old[0], "exit status 0")
	h.exit(old[1], "exit status 0")
	h.want("release 1")
	if s := h.m.Snapshot(); s.Draining != 0 || s.Workers != 2 || s.Generation != 2 {
		t.Errorf("snapshot %+v", s)
	}
}

func TestReloadRollsBack(t *testing.T) {
	tests := []struct {
		name string
		fail func(h *harness, nw []int)
		want string
	}{
		{"new worker exits", func(h *harness, nw []int) { h.exit(nw[1], "exit status 1") },
			"worker 1 (pid 104) exited before it was ready: exit status 1"},
		{"new ready worker exits", func(h *harness, nw []int) { h.ready(nw[0]); h.exit(nw[0], "exit status 2") },
			"worker 0 (pid 103) exited before its generation was ready: exit status 2"},
		{"ready timeout", func(h *harness, nw []int) { h.advance(time.Minute) },
			"did not become ready within 1m0s"},
		{"new worker cannot start", nil, "cannot start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t, nil), Options{})
			old := h.serve()
			rep, got := reply()
			if tt.fail == nil {
				h.env.failStarts = 1
			}
			h.step(Reload{Reply: rep})
			if tt.fail != nil {
				tt.fail(h, h.started())
			}
			acts := h.take()
			for _, pid := range old {
				if s := signalsTo(acts, pid); len(s) > 0 {
					t.Errorf("serving worker %d got %v during a failed reload", pid, s)
				}
			}
			if len(*got) != 1 || (*got)[0].Err == nil || (*got)[0].Generation != 1 {
				t.Fatalf("reply %+v", *got)
			}
			if err := (*got)[0].Err.Error(); !strings.Contains(err, tt.want) && !(tt.fail == nil && strings.Contains(err, "fork/exec")) {
				t.Errorf("err = %s, want %q", err, tt.want)
			}
			// Still serving: the next reload runs.
			h.step(Reload{})
			h.want("systemd RELOADING=1", "start g3 s0")
		})
	}
}

func TestReloadFailsBeforeStarting(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.serve()
	h.env.loadErr = errors.New("config: baton.toml:3: worker.count: must be at least 1")
	rep, got := reply()
	h.step(Reload{Reply: rep})
	h.want("systemd RELOADING=1", "systemd READY=1 STATUS=2/2 workers ready, generation 1, 0 restarts in 1m0s, last reload failed 0s ago: supervisor: reload: config: baton.toml:3")
	if len(*got) != 1 || !strings.Contains((*got)[0].Err.Error(), "worker.count") {
		t.Fatalf("reply %+v", *got)
	}
	h.env.loadErr = nil
	h.env.nextCfg = testConfig(t, func(c *config.Config) { c.Control.Socket = "/run/elsewhere.sock" })
	h.step(Reload{Reply: rep})
	if len(*got) != 2 || !strings.Contains((*got)[1].Err.Error(), "restart baton to move the control socket") {
		t.Fatalf("reply %+v", *got)
	}
}

func TestReloadRequestsCoalesce(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.serve()
	r1, got1 := reply()
	h.step(Reload{Reply: r1})
	first := h.started()
	h.take()
	var queued []*[]Result
	for range 3 {
		r, got := reply()
		h.step(Reload{Reply: r})
		queued = append(queued, got)
	}
	h.step(Reload{}) // a SIGHUP too
	h.none("start ")
	h.ready(first...)
	if len(*got1) != 1 || (*got1)[0].Generation != 2 {
		t.Fatalf("first reply %+v", *got1)
	}
	second := h.started()
	h.take()
	if len(second) != 2 {
		t.Fatalf("after the first reload, started %v; want one more generation of 2", second)
	}
	h.ready(second...)
	h.none("start ")
	for i, got := range queued {
		if len(*got) != 1 || (*got)[0].Err != nil || (*got)[0].Generation != 3 {
			t.Errorf("queued request %d: %+v, want generation 3", i, *got)
		}
	}
}

func TestReloadQueuedDuringStartRunsOnceServing(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	pids := h.start()
	rep, got := reply()
	h.step(Reload{Reply: rep})
	h.none("systemd RELOADING=1")
	h.ready(pids...)
	h.want("systemd READY=1", "serving", "systemd RELOADING=1", "start g2 s0")
	if len(*got) != 0 {
		t.Fatal("answered before its reload ran")
	}
}

func TestCrashDuringReload(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	old := h.serve()
	rep, got := reply()
	h.step(Reload{Reply: rep})
	nw := h.started()
	h.exit(old[0], "killed by SIGSEGV")
	h.advance(100 * time.Millisecond) // restart.backoff_min
	h.want("signal 101 SIGKILL group", "start g1 s0 = 105")
	h.ready(105)
	h.ready(nw...)
	acts := h.take()
	for _, pid := range []int{105, old[1]} {
		if s := signalsTo(acts, pid); len(s) != 1 || s[0] != "SIGTERM group" {
			t.Errorf("generation 1's worker %d got %v, want SIGTERM once generation 2 is ready", pid, s)
		}
	}
	if len(*got) != 1 || (*got)[0].Err != nil {
		t.Fatalf("reply %+v", *got)
	}
	if s := h.m.Snapshot(); s.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", s.Restarts)
	}
}

// The configuration is read off the loop: until it is Loaded the Machine
// serves as before (status, crashes replaced, requests queued), then
// the reload goes on.
func TestReloadWaitsForItsConfig(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	old := h.serve()
	h.env.holdLoads = true
	rep, got := reply()
	h.step(Reload{Reply: rep})
	h.want("systemd RELOADING=1", "load config")
	if s := h.m.Snapshot(); s.Phase != "reloading" || !s.Ready || s.Generation != 1 {
		t.Errorf("snapshot while the config is read: %+v", s)
	}
	h.exit(old[0], "killed by SIGKILL")
	h.advance(100 * time.Millisecond) // restart.backoff_min
	h.want("start g1 s0 = 103")
	h.ready(103)
	later, gotLater := reply()
	h.step(Reload{Reply: later})
	h.none("start ", "load config")
	if len(*got) != 0 {
		t.Fatalf("answered before the config came: %+v", *got)
	}

	h.env.holdLoads = false
	h.answerLoads()
	h.want("open store=true", "start g2 s0 = 104", "start g2 s1 = 105")
	h.ready(104, 105)
	if len(*got) != 1 || (*got)[0].Err != nil || (*got)[0].Generation != 2 {
		t.Fatalf("reply %+v", *got)
	}
	h.want("systemd READY=1", "systemd RELOADING=1", "load config", "start g3 s0")
	if len(*gotLater) != 0 {
		t.Fatalf("the queued reload answered before its generation was ready: %+v", *gotLater)
	}
}

// A stop while the configuration is read ends the reload; the
// configuration that comes after is dropped.
func TestStopWhileConfigLoads(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.serve()
	h.env.holdLoads = true
	rep, got := reply()
	h.step(Reload{Reply: rep})
	h.step(Stop{Signal: "terminated"})
	if len(*got) != 1 || !errors.Is((*got)[0].Err, errStopping) {
		t.Fatalf("reply %+v, want the stop's error", *got)
	}
	h.take()
	h.env.holdLoads = false
	h.answerLoads()
	h.none("start ", "open ", "systemd READY=1")
	if s := h.m.Snapshot(); s.Phase != "stopping" || s.Reloading {
		t.Errorf("snapshot %+v", s)
	}
}

func TestReplaceFirst(t *testing.T) {
	tests := []struct {
		name  string
		cfg   func(*config.Config)
		cause func(h *harness, pid int)
		then  string
	}{
		{"STOPPING=1", nil, func(h *harness, pid int) { h.notify(pid, "STOPPING=1") }, "SIGTERM group"},
		{"watchdog", func(c *config.Config) { c.Worker.Watchdog = config.Duration(2 * time.Second) },
			func(h *harness, pid int) {
				h.advance(time.Second)
				h.notify(102, "WATCHDOG=1")
				h.advance(time.Second)
			}, "SIGKILL group"},
		{"max_memory", func(c *config.Config) { c.Worker.MaxMemory = 64 << 20 },
			func(h *harness, pid int) { h.env.rss[pid] = 65 << 20; h.advance(MemoryCheckInterval) }, "SIGTERM group"},
		{"stuck", nil, func(h *harness, pid int) { h.step(Stuck{PID: pid, Unread: 5 * time.Second}) }, "SIGTERM group"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t, tt.cfg), Options{})
			pids := h.start()
			h.ready(pids...)
			h.take()
			tt.cause(h, pids[0])
			acts := h.take()
			if s := signalsTo(acts, pids[0]); len(s) != 0 {
				t.Fatalf("old worker got %v before its replacement was ready", s)
			}
			if !contains(acts, "start g1 s0 = 103") {
				t.Fatalf("no replacement started in slot 0: %v", acts)
			}
			h.ready(103)
			if s := signalsTo(h.take(), pids[0]); len(s) != 1 || s[0] != tt.then {
				t.Errorf("old worker got %v once its replacement was ready, want %s", s, tt.then)
			}
			if s := h.m.Snapshot(); s.Restarts != 1 {
				t.Errorf("restarts = %d, want 1", s.Restarts)
			}
		})
	}
}

// worker.watchdog starts once a worker is ready, as WatchdogSec= does
// once start-up is complete: a worker slower to start than the watchdog
// is waited for (reload.timeout bounds its start), then watched.
func TestWatchdogStartsOnceReady(t *testing.T) {
	h := newHarness(t, testConfig(t, func(c *config.Config) {
		c.Worker.Count = 1
		c.Worker.Watchdog = config.Duration(2 * time.Second)
	}), Options{})
	pid := h.start()[0]
	h.take()
	h.advance(5 * time.Second)
	if s := signalsTo(h.take(), pid); len(s) != 0 {
		t.Fatalf("a worker still starting got %v from the watchdog", s)
	}
	h.ready(pid)
	h.take()
	h.advance(2*time.Second - time.Millisecond)
	h.none("start ", "signal ")
	h.advance(time.Millisecond)
	h.want("start g1 s0 = 102")
}

func TestLeavingWorkerDrainsWhenNoReplacementStarts(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	pids := h.serve()
	h.env.failStarts = 1
	h.notify(pids[0], "STOPPING=1")
	h.want("start g1 s0 failed", "signal 101 SIGTERM group")
	h.advance(RespawnDelay)
	h.want("start g1 s0 = 103")
}

func TestRestartBackoffThenGiveUp(t *testing.T) {
	h := newHarness(t, testConfig(t, func(c *config.Config) {
		c.Worker.Count = 1
		c.Restart.Limit = 3
		c.Restart.BackoffMin = config.Duration(time.Second)
	}), Options{})
	pid := h.serve()[0]
	for _, delay := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		h.exit(pid, "exit status 1")
		h.advance(delay - time.Millisecond)
		h.none("start ")
		h.advance(time.Millisecond)
		if s := h.started(); len(s) != 1 {
			t.Fatalf("after %s: started %v, want the replacement", delay, s)
		} else {
			pid = s[0]
		}
		h.take()
	}
	h.exit(pid, "exit status 1")
	h.want("systemd STOPPING=1")
	if !h.m.Done() {
		t.Fatal("not done")
	}
	if err := h.m.Finish(); !errors.Is(err, ErrGiveUp) || !strings.Contains(err.Error(), "3 restarts within 1m0s") {
		t.Errorf("err = %v", err)
	}
}

// degradedHarness serves 2 workers with a budget of 1 restart and
// on_giveup = "degrade", and spends it: slot 0 crashes, its replacement
// (103) crashes too, and baton gives up with 102 serving.
func degradedHarness(t *testing.T) *harness {
	h := newHarness(t, testConfig(t, func(c *config.Config) {
		c.Restart.Limit = 1
		c.Restart.OnGiveUp = "degrade"
	}), Options{})
	pids := h.serve()
	h.exit(pids[0], "exit status 1")
	h.advance(time.Second)
	h.ready(h.started()...)
	h.take()
	h.exit(103, "exit status 1")
	return h
}

func TestGiveUpDegradeThenReloadResumes(t *testing.T) {
	h := degradedHarness(t)
	h.want("systemd STATUS=1/2 workers ready, generation 1, 1 restarts in 1m0s, gave up restarting")
	h.advance(time.Minute)
	h.none("start ")
	rep, got := reply()
	h.step(Reload{Reply: rep})
	h.ready(h.started()...)
	if len(*got) != 1 || (*got)[0].Err != nil {
		t.Fatalf("reply %+v", *got)
	}
	h.take()
	h.exit(104, "exit status 1")
	h.advance(time.Second)
	if s := h.started(); len(s) != 1 {
		t.Errorf("after the reload, a crash was not replaced: %v", h.take())
	}
}

// X_BATON_DRAINS_ACCEPTED=1 from a worker, or from a process that
// speaks for it, is said of the worker, before its READY=1 is acted on;
// a stranger's is not.
func TestNotifyDrainsAccepted(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	pids := h.start()
	h.env.parents[500] = pids[0]
	h.notify(500, "READY=1", "X_BATON_DRAINS_ACCEPTED=1")
	h.notify(999, "X_BATON_DRAINS_ACCEPTED=1")
	h.notify(pids[1], "X_BATON_DRAINS_ACCEPTED=1", "READY=1")
	h.want(fmt.Sprintf("drains accepted %d", pids[0]), fmt.Sprintf("drains accepted %d", pids[1]), "systemd READY=1")
	h.notify(999, "X_BATON_DRAINS_ACCEPTED=1")
	h.none("drains accepted")
}

func TestNotifySenders(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	pids := h.start()
	// A wrapper's child speaks for the worker; a stranger is dropped.
	h.env.parents[500] = pids[0]
	h.notify(500, "READY=1")
	h.notify(999, "READY=1")
	h.notify(pids[1], "READY=1", "STATUS=warm")
	h.want("systemd READY=1")
	if s := h.m.Snapshot(); s.NotifyDrops != 1 {
		t.Errorf("dropped %d, want 1 (the stranger)", s.NotifyDrops)
	}
	// A worker's last message may come after its exit: not a stranger's,
	// and it starts nothing.
	h.exit(pids[1], "exit status 0")
	h.take()
	h.notify(pids[1], "STOPPING=1")
	if s := h.m.Snapshot(); s.NotifyDrops != 1 {
		t.Errorf("dropped %d after a late message, want still 1", s.NotifyDrops)
	}
	h.none("start ")
}

func TestStop(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	pids := h.serve()
	h.env.live[777] = true // something a worker left behind
	h.step(Stop{Signal: "terminated"})
	h.want("no more upgrades", "systemd STOPPING=1", "signal 101 SIGTERM group", "signal 102 SIGTERM group",
		"close sockets shared=false", "signal 777 SIGTERM orphan", "systemd EXTEND_TIMEOUT_USEC=35000000")
	h.exit(pids[0], "exit status 0")
	h.none("start ")
	h.advance(30 * time.Second)
	h.want("signal 102 SIGKILL group", "signal 777 SIGKILL orphan")
	h.exit(pids[1], "killed by SIGKILL")
	if h.m.Done() {
		t.Fatal("done while an orphan lives")
	}
	h.exit(777, "killed by SIGKILL")
	if !h.m.Done() || h.m.Finish() != nil {
		t.Fatalf("done %v, err %v", h.m.Done(), h.m.Finish())
	}
	rep, got := reply()
	h.step(Reload{Reply: rep})
	if len(*got) != 1 || !errors.Is((*got)[0].Err, errStopping) {
		t.Errorf("reload while stopping: %+v", *got)
	}
}

// A child baton had before it started any worker (a shell's process
// substitution: bash forks tee, then execs baton) is no worker's: a stop
// never signals it, killing or not, and does not wait for it. What a
// worker left behind still goes, even at a pid a foreign child had.
func TestStopLeavesChildrenFromBeforeStart(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.env.live[50] = true // tee, from before
	h.env.live[60] = true // another, that exits before the stop
	pids := h.serve()
	h.exit(60, "exit status 0")
	h.env.live[60] = true // the pid again, now a worker's orphan
	h.env.live[777] = true
	h.step(Stop{Signal: "terminated"})
	h.want("signal 101 SIGTERM group", "signal 102 SIGTERM group", "close sockets shared=false", "signal 60 SIGTERM orphan", "signal 777 SIGTERM orphan")
	h.exit(pids[0], "exit status 0")
	h.advance(30 * time.Second)
	h.want("signal 102 SIGKILL group", "signal 60 SIGKILL orphan", "signal 777 SIGKILL orphan")
	h.step(Stop{Signal: "terminated"})
	h.exit(pids[1], "killed by SIGKILL")
	h.exit(60, "killed by SIGKILL")
	h.exit(777, "killed by SIGKILL")
	h.advance(time.Minute)
	if s := signalsTo(h.take(), 50); len(s) != 0 {
		t.Errorf("the child from before the start got %d signals, first %s", len(s), s[0])
	}
	if !h.m.Done() {
		t.Error("not done once every worker and orphan is gone: waiting for the child from before the start")
	}
}

// During a self-upgrade that a stop cancels, the successor the upgrader
// cannot name is the child that is no worker, never one from before the
// start.
func TestStopDuringUpgradeSparesChildFromBeforeStart(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.env.live[50] = true
	h.serve()
	h.step(Reload{Upgrade: true})
	h.want("systemd RELOADING=1", "upgrade after g1")
	h.env.live[900] = true // the successor
	h.step(Stop{Signal: "terminated"})
	acts := h.take()
	if s := signalsTo(acts, 900); len(s) != 1 || s[0] != "SIGTERM process" {
		t.Errorf("the successor got %v, want SIGTERM", s)
	}
	if s := signalsTo(acts, 50); len(s) != 0 {
		t.Errorf("the child from before the start got %v", s)
	}
}

func TestSecondStopSignalKills(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.serve()
	h.step(Stop{Signal: "interrupt"})
	h.take()
	h.step(Stop{Signal: "interrupt"})
	acts := h.take()
	for _, pid := range []int{101, 102} {
		if s := signalsTo(acts, pid); len(s) != 1 || s[0] != "SIGKILL group" {
			t.Errorf("worker %d got %v on the second signal, want SIGKILL", pid, s)
		}
	}
}

// delayedHarness returns a harness whose configuration has a stop.delay
// of 3s, with changes made by mod.
func delayedHarness(t *testing.T, mod func(*config.Config)) *harness {
	return newHarness(t, testConfig(t, func(c *config.Config) {
		c.Stop.Delay = config.Duration(3 * time.Second)
		if mod != nil {
			mod(c)
		}
	}), Options{})
}

// With stop.delay, a stop makes baton a lame duck: not ready, saying so
// to systemd (whose stop timeout covers the delay too), but serving at
// full strength until the delay is over: no socket closes, no worker is
// signalled, a crashed one is replaced; reloads, upgrades, scales and
// restarts are refused. Then the drain is the one without a delay.
func TestStopDelayLameDuck(t *testing.T) {
	h := delayedHarness(t, nil)
	pids := h.serve()
	h.env.live[777] = true // something a worker left behind: left until the drain
	h.step(Stop{Signal: "terminated"})
	acts := h.take()
	if !slices.Equal(acts, []string{"systemd STOPPING=1 STATUS=stopping in 3s: lame duck (stop.delay), 2/2 workers ready, generation 1, 0 restarts in 1m0s EXTEND_TIMEOUT_USEC=38000000"}) {
		t.Errorf("actions on a stop with stop.delay:\n\t%s", strings.Join(acts, "\n\t"))
	}
	if s := h.m.Snapshot(); s.Ready || s.Phase != "lame duck" || s.StopIn != 3*time.Second || s.Procs[0].State != "ready" {
		t.Errorf("lame duck: %+v", s)
	}

	h.advance(time.Second)
	h.exit(pids[0], "exit status 1")
	h.advance(100 * time.Millisecond) // restart.backoff_min
	h.want("signal 101 SIGKILL group", "start g1 s0 = 103")
	h.ready(103)
	h.want("systemd STATUS=stopping in 1.9s: lame duck (stop.delay), 2/2 workers ready, generation 1, 1 restarts in 1m0s")
	if s := h.m.Snapshot(); s.StopIn != 1900*time.Millisecond || s.Ready {
		t.Errorf("lame duck after 1.1s: %+v", s)
	}
	for _, ev := range []func(func(Result)) Event{
		func(r func(Result)) Event { return Reload{Reply: r} },
		func(r func(Result)) Event { return Reload{Upgrade: true, Reply: r} },
		func(r func(Result)) Event { return Scale{N: 4, Reply: r} },
		func(r func(Result)) Event { return Restart{Slot: 1, Reply: r} },
	} {
		rep, got := reply()
		e := ev(rep)
		h.step(e)
		if len(*got) != 1 || !errors.Is((*got)[0].Err, errStopping) || !strings.Contains((*got)[0].Err.Error(), "a lame duck for 1.9s more (stop.delay)") {
			t.Errorf("%T during the lame duck: %+v", e, *got)
		}
	}
	h.advance(1900*time.Millisecond - time.Nanosecond)
	h.none("start ", "signal ", "close ", "systemd ", "upgrade ")

	h.advance(time.Nanosecond)
	h.want("no more upgrades", "systemd STOPPING=1", "signal 102 SIGTERM group", "signal 103 SIGTERM group",
		"close sockets shared=false", "signal 777 SIGTERM orphan", "systemd EXTEND_TIMEOUT_USEC=35000000")
	if s := h.m.Snapshot(); s.Phase != "stopping" || s.StopIn != 0 {
		t.Errorf("after the delay: %+v", s)
	}
	for _, pid := range []int{102, 103, 777} {
		h.exit(pid, "exit status 0")
	}
	if !h.m.Done() || h.m.Finish() != nil {
		t.Errorf("done %v, err %v", h.m.Done(), h.m.Finish())
	}
}

// A stop signal during the delay, or baton stop --now, skips the rest of
// it: the drain begins at once, and a stop signal during the drain kills.
func TestStopDelaySkipped(t *testing.T) {
	ctl := func(Result) {}
	for _, tt := range []struct {
		name        string
		first, then Stop
	}{
		{"second SIGTERM", Stop{Signal: "terminated"}, Stop{Signal: "terminated"}},
		{"SIGINT after SIGTERM", Stop{Signal: "terminated"}, Stop{Signal: "interrupt"}},
		{"SIGTERM after baton stop", Stop{Reply: ctl}, Stop{Signal: "terminated"}},
		{"baton stop --now", Stop{Signal: "terminated"}, Stop{Now: true, Reply: ctl}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := delayedHarness(t, nil)
			h.serve()
			h.step(tt.first)
			h.advance(time.Second)
			h.none("signal ")
			h.step(tt.then)
			h.want("no more upgrades", "systemd STOPPING=1", "signal 101 SIGTERM group", "signal 102 SIGTERM group", "close sockets shared=false")
			h.advance(2 * time.Second) // the delay's end changes nothing
			h.none("signal ", "systemd ")
			h.step(Stop{Signal: "terminated"})
			h.want("signal 101 SIGKILL group", "signal 102 SIGKILL group")
		})
	}
}

// baton stop honours the delay, and so does a second one; each is
// answered once baton is done. baton stop --now drains at once.
func TestStopDelayControlStop(t *testing.T) {
	h := delayedHarness(t, nil)
	pids := h.serve()
	r1, got1 := reply()
	r2, got2 := reply()
	h.step(Stop{Reply: r1})
	h.advance(time.Second)
	h.step(Stop{Reply: r2})
	h.advance(2*time.Second - time.Nanosecond)
	h.none("signal ")
	h.advance(time.Nanosecond)
	h.want("signal 101 SIGTERM group", "signal 102 SIGTERM group")
	for _, pid := range pids {
		h.exit(pid, "exit status 0")
	}
	if len(*got1)+len(*got2) != 0 || !h.m.Done() {
		t.Fatalf("answered before Finish: %+v %+v", *got1, *got2)
	}
	if err := h.m.Finish(); err != nil || len(*got1) != 1 || len(*got2) != 1 || (*got1)[0].Err != nil || (*got2)[0].Err != nil {
		t.Errorf("finish %v: %+v %+v", err, *got1, *got2)
	}

	h = delayedHarness(t, nil)
	h.serve()
	h.step(Stop{Now: true, Reply: r1})
	h.want("systemd STOPPING=1", "signal 101 SIGTERM group", "signal 102 SIGTERM group", "close sockets shared=false")
}

// A stop during a reload makes the serving generation the lame duck: the
// reload fails at once and its new workers drain; a rolling reload's
// switched slots get old-config workers again, so that the lame duck
// serves at full strength.
func TestStopDelayDuringReload(t *testing.T) {
	for _, surge := range []int{0, 1} {
		t.Run(fmt.Sprintf("surge=%d", surge), func(t *testing.T) {
			h := delayedHarness(t, func(c *config.Config) { c.Reload.Surge = surge })
			h.serve()
			if surge > 0 {
				h.ready(102) // the first start, too, starts one at a time
				h.take()
			}
			rep, got := reply()
			h.step(Reload{Reply: rep})
			nw := h.started()
			if surge > 0 {
				h.ready(nw[0]) // switches slot 0: worker 101 drains
				h.want("signal 101 SIGTERM group")
			}
			h.step(Stop{Signal: "terminated"})
			if len(*got) != 1 || !errors.Is((*got)[0].Err, errStopping) {
				t.Fatalf("reply %+v", *got)
			}
			acts := h.take()
			for _, pid := range nw {
				if s := signalsTo(acts, pid); len(s) != 1 || s[0] != "SIGTERM group" {
					t.Errorf("the reload's worker %d got %v, want SIGTERM", pid, s)
				}
			}
			if s := signalsTo(acts, 102); len(s) != 0 {
				t.Errorf("serving worker 102 got %v during the lame duck", s)
			}
			if surge > 0 && !contains(acts, "start g1 s0 = ") {
				t.Errorf("slot 0, switched by the rolling reload, has no worker of the serving generation again:\n\t%s", strings.Join(acts, "\n\t"))
			}
			if contains(acts, "systemd READY=1") || h.m.Snapshot().Phase != "lame duck" {
				t.Errorf("not a lame duck: %v", acts)
			}
			h.advance(3 * time.Second)
			h.want("systemd STOPPING=1", "signal 102 SIGTERM group")
		})
	}
}

// Where no generation serves yet, nothing is routed to baton: a stop
// drains at once.
func TestStopDelayWhileStarting(t *testing.T) {
	h := delayedHarness(t, nil)
	h.start()
	h.step(Stop{Signal: "terminated"})
	h.want("systemd STOPPING=1", "signal 101 SIGTERM group", "signal 102 SIGTERM group")
}

// A stop during a self-upgrade cancels it; once the successor gave up,
// baton is a lame duck for what is left of the delay, which counts from
// the stop. A second signal meanwhile drains at once.
func TestStopDelayDuringUpgrade(t *testing.T) {
	start := func(t *testing.T) *harness {
		h := delayedHarness(t, nil)
		h.serve()
		h.step(Reload{Upgrade: true})
		h.env.live[900] = true // the successor
		h.env.knowsSucc = true
		h.step(Stop{Signal: "terminated"})
		h.want("systemd RELOADING=1", "upgrade after g1", "signal successor SIGTERM true")
		return h
	}
	t.Run("successor gives up", func(t *testing.T) {
		h := start(t)
		h.advance(time.Second)
		delete(h.env.live, 900)
		h.step(UpgradeDone{PID: 900, Err: errors.New("upgrade: the new baton gave up")})
		h.want("systemd STOPPING=1 STATUS=stopping in 2s: lame duck (stop.delay)", "release 1")
		h.none("signal 101", "signal 102")
		h.advance(2 * time.Second)
		h.want("no more upgrades", "systemd STOPPING=1", "signal 101 SIGTERM group", "signal 102 SIGTERM group", "close sockets shared=false")
	})
	t.Run("second signal", func(t *testing.T) {
		h := start(t)
		h.step(Stop{Signal: "terminated"})
		h.want("no more upgrades", "systemd STOPPING=1", "signal 101 SIGTERM group", "signal 102 SIGTERM group")
		h.none("signal 101 SIGKILL", "signal 102 SIGKILL")
	})
}

// Giving up (the restart budget spent, on_giveup = "exit") is no stop
// asked for: it drains at once, during a lame duck too.
func TestStopDelayGiveUpDrainsAtOnce(t *testing.T) {
	h := delayedHarness(t, func(c *config.Config) { c.Restart.Limit = 1 })
	h.serve()
	h.step(Stop{Signal: "terminated"})
	h.exit(101, "exit status 1")
	h.advance(100 * time.Millisecond)
	h.want("start g1 s0 = 103")
	h.exit(103, "exit status 1")
	h.want("systemd STOPPING=1", "signal 102 SIGTERM group")
	h.exit(102, "exit status 0")
	if err := h.m.Finish(); !errors.Is(err, ErrGiveUp) {
		t.Errorf("err = %v", err)
	}
}

func TestStopDuringReload(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.serve()
	rep, got := reply()
	h.step(Reload{Reply: rep})
	h.step(Stop{Signal: "terminated"})
	if len(*got) != 1 || !errors.Is((*got)[0].Err, errStopping) {
		t.Fatalf("reply %+v", *got)
	}
	acts := h.take()
	for _, pid := range []int{101, 102, 103, 104} {
		if s := signalsTo(acts, pid); len(s) != 1 || s[0] != "SIGTERM group" {
			t.Errorf("worker %d got %v, want SIGTERM", pid, s)
		}
	}
	if contains(acts, "systemd READY=1") {
		t.Error("READY=1 sent while stopping")
	}
	// A reload the stop ended failed; it was no self-upgrade.
	if c := h.m.Snapshot().Counts; c.Reloads["failed"] != 1 || len(c.Upgrades) != 0 && c.Upgrades["failed"] != 0 {
		t.Errorf("reloads %v, upgrades %v: want one failed reload", c.Reloads, c.Upgrades)
	}
}

// upgradeUnderWayHarness returns a harness whose Machine serves and has a self-upgrade
// under way.
func upgradeUnderWayHarness(t *testing.T, reply func(Result)) *harness {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.serve()
	h.step(Reload{Upgrade: true, Reply: reply})
	h.want("systemd RELOADING=1", "upgrade after g1")
	h.env.live[900] = true // the successor
	return h
}

func TestUpgradeHandsOver(t *testing.T) {
	rep, got := reply()
	h := upgradeUnderWayHarness(t, rep)
	h.step(UpgradeDone{PID: 900})
	h.want("hand over to 900", "signal 101 SIGTERM group", "signal 102 SIGTERM group", "close sockets shared=true")
	h.exit(101, "exit status 0")
	h.exit(102, "exit status 0")
	h.none("systemd", "release")
	if h.m.Done() {
		t.Fatal("done before the requester was answered")
	}
	h.step(SuccessorInfo{PID: 900, Generation: 2, Workers: 2})
	if len(*got) != 1 || !(*got)[0].Upgraded || (*got)[0].PID != 900 || (*got)[0].Generation != 2 {
		t.Fatalf("reply %+v", *got)
	}
	if !h.m.Done() || h.m.Finish() != nil {
		t.Fatal("not done once answered")
	}
	if !h.m.Sharing() {
		t.Error("a baton that handed over must leave the sockets' paths to the successor")
	}
}

func TestUpgradeHandOverSuccessorSilent(t *testing.T) {
	rep, got := reply()
	h := upgradeUnderWayHarness(t, rep)
	h.step(UpgradeDone{PID: 900})
	h.advance(BarrierTimeout + SuccessorTimeout)
	if len(*got) != 1 || (*got)[0].PID != 900 || !(*got)[0].Upgraded {
		t.Fatalf("reply %+v", *got)
	}
}

func TestUpgradeFailsKeepsServing(t *testing.T) {
	rep, got := reply()
	h := upgradeUnderWayHarness(t, rep)
	h.step(UpgradeDone{PID: 900, Err: errors.New("upgrade: child pid=900 exited: exit status 1")})
	h.want("systemd READY=1", "release 1")
	if len(*got) != 1 || !strings.Contains((*got)[0].Err.Error(), "this baton keeps serving: upgrade: child pid=900 exited: exit status 1") {
		t.Fatalf("reply %+v", *got)
	}
	h.step(Reload{})
	h.want("systemd RELOADING=1", "start g2 s0")
}

func TestUpgradeRefused(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.serve()
	h.env.cannot = errors.New("supervisor: self-upgrade: baton is PID 1 here")
	rep, got := reply()
	h.step(Reload{Upgrade: true, Reply: rep})
	if len(*got) != 1 || !strings.Contains((*got)[0].Err.Error(), "PID 1") || h.env.upgrades != 0 {
		t.Fatalf("reply %+v, upgrades %d", *got, h.env.upgrades)
	}
}

func TestUpgradeDeadline(t *testing.T) {
	rep, got := reply()
	h := upgradeUnderWayHarness(t, rep)
	h.env.knowsSucc = true
	h.advance(upgradeTimeout(h.cfg))
	h.want("signal successor SIGTERM true")
	h.advance(h.cfg.Worker.DrainTimeout.Std() + 5*time.Second)
	h.want("signal successor SIGKILL true")
	h.step(UpgradeDone{PID: 900, Err: errors.New("upgrade: the new baton was killed")})
	if len(*got) != 1 || (*got)[0].Err == nil {
		t.Fatalf("reply %+v", *got)
	}
}

func TestReloadDuringUpgrade(t *testing.T) {
	rep, got := reply()
	h := upgradeUnderWayHarness(t, rep)
	ctl, ctlGot := reply()
	h.step(Reload{Reply: ctl})
	h.step(Reload{}) // SIGHUP
	h.none("systemd RELOADING=1", "start ")
	h.step(UpgradeDone{PID: 900})
	h.want("hand over to 900", "signal 900 SIGHUP process")
	if len(*ctlGot) != 1 || !strings.Contains((*ctlGot)[0].Err.Error(), "replaced this baton by pid 900: send the request again") {
		t.Fatalf("queued control reload: %+v", *ctlGot)
	}
	if len(*got) != 0 {
		t.Fatal("the upgrade's requester answered before the successor did")
	}
}

func TestStopDuringUpgrade(t *testing.T) {
	tests := []struct {
		name      string
		knowsSucc bool
		done      UpgradeDone
		want      []string
	}{
		// The successor was told to give up and did: stop for real.
		{"successor gives up", true, UpgradeDone{PID: 900, Err: errors.New("upgrade: the new baton gave up")},
			[]string{"no more upgrades", "systemd STOPPING=1", "signal 101 SIGTERM group"}},
		// It could not be told: once it took over, the stop is passed on.
		{"successor takes over", false, UpgradeDone{PID: 900},
			[]string{"hand over to 900", "signal 900 SIGTERM process", "signal 101 SIGTERM group"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, got := reply()
			h := upgradeUnderWayHarness(t, rep)
			h.env.knowsSucc = tt.knowsSucc
			delete(h.env.live, 900) // the upgrader alone knows it, if anyone
			h.step(Stop{Signal: "terminated"})
			h.want("signal successor SIGTERM")
			h.none("systemd STOPPING=1", "signal 101")
			if h.m.Done() {
				t.Fatal("done during the upgrade")
			}
			h.step(tt.done)
			h.want(tt.want...)
			if tt.done.Err != nil && (len(*got) != 1 || !strings.Contains((*got)[0].Err.Error(), "self-upgrade cancelled: baton is stopping")) {
				t.Errorf("reply %+v", *got)
			}
		})
	}
}

func TestSecondStopSignalDuringUpgrade(t *testing.T) {
	rep, got := reply()
	h := upgradeUnderWayHarness(t, rep)
	h.step(Stop{Signal: "terminated"})
	h.take()
	h.step(Stop{Signal: "terminated"})
	// The successor goes (the upgrader kills it), and so does everything
	// else, now: no worker is replaced.
	h.want("no more upgrades", "systemd STOPPING=1", "signal 101 SIGTERM group", "signal 102 SIGTERM group",
		"close sockets shared=false", "signal 101 SIGKILL group", "signal 102 SIGKILL group")
	if len(*got) != 1 || !errors.Is((*got)[0].Err, errStopping) {
		t.Errorf("reply %+v", *got)
	}
	h.exit(101, "killed by SIGKILL")
	h.exit(102, "killed by SIGKILL")
	h.advance(time.Minute)
	h.none("start ")
	// The upgrader, not the reaper, waits for the new baton: its end is
	// never an Exited event, but baton must still see it gone.
	h.step(UpgradeDone{PID: 900, Err: errors.New("upgrade: terminating")})
	delete(h.env.live, 900)
	h.advance(time.Second)
	if !h.m.Done() {
		t.Error("not done once every child is gone")
	}
}

func TestStopDuringHandover(t *testing.T) {
	rep, _ := reply()
	h := upgradeUnderWayHarness(t, rep)
	h.step(UpgradeDone{PID: 900})
	h.take()
	h.step(Stop{Signal: "terminated"})
	h.none("systemd", "signal 900", "no more upgrades")
	h.step(Stop{Signal: "terminated"})
	acts := h.take()
	for _, pid := range []int{101, 102} {
		if s := signalsTo(acts, pid); len(s) != 1 || s[0] != "SIGKILL group" {
			t.Errorf("worker %d got %v on the second signal, want SIGKILL", pid, s)
		}
	}
	if s := signalsTo(acts, 900); len(s) > 0 {
		t.Errorf("the successor got %v", s)
	}
}

func TestTakeOver(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{Parent: 50, LastGen: 4})
	h.env.watchdog = 10 * time.Second
	pids := h.start()
	h.want("open store=false", "start g5 s0")
	h.step(Reload{}) // a SIGHUP before it is in charge waits
	h.ready(pids...)
	h.want("take over: 2/2 workers ready, generation 5", "systemd WATCHDOG=1", "systemd RELOADING=1", "start g6 s0")
	if h.m.Sharing() || !h.m.InCharge() {
		t.Error("still sharing once in charge")
	}
}

func TestStopBeforeTakingOver(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{Parent: 50})
	pids := h.start()
	h.step(Stop{Signal: "terminated"})
	h.want("signal 101 SIGTERM group", "close sockets shared=true")
	h.none("systemd")
	for _, pid := range pids {
		h.exit(pid, "exit status 0")
	}
	if !h.m.Done() {
		t.Fatal("not done")
	}
	if err := h.m.Finish(); err == nil || !strings.Contains(err.Error(), "stopped before taking over") {
		t.Errorf("err = %v", err)
	}
}

func TestOwnWatchdog(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.env.watchdog = 5 * time.Second
	h.serve()
	h.advance(10 * time.Second)
	if n := strings.Count(strings.Join(h.take(), "\n"), "systemd WATCHDOG=1"); n != 2 {
		t.Errorf("%d pings in 10s, want 2", n)
	}
}

// While a successor starts (a self-upgrade), this baton is still the one
// systemd's watchdog counts on: its pings go on until it hands over. A
// successor that took longer than WatchdogSec to take over got the whole
// service killed (TestSystemdWatchdog, under load).
func TestOwnWatchdogDuringUpgrade(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.env.watchdog = time.Second // a ping every second: WatchdogSec=2s
	h.serve()
	h.step(Reload{Upgrade: true})
	h.want("systemd RELOADING=1", "upgrade after g1")
	h.advance(3 * time.Second)
	if n := strings.Count(strings.Join(h.take(), "\n"), "systemd WATCHDOG=1"); n != 3 {
		t.Errorf("%d pings in 3 s of a self-upgrade, one a second, want 3", n)
	}
	h.step(UpgradeDone{PID: 900})
	h.take()
	h.advance(3 * time.Second)
	h.none("systemd WATCHDOG=1")
}

func TestMaxDraining(t *testing.T) {
	h := newHarness(t, testConfig(t, func(c *config.Config) { c.Reload.MaxDraining = 1; c.Worker.Count = 1 }), Options{})
	h.serve()
	for range 2 {
		h.step(Reload{})
		h.ready(h.started()...)
	}
	h.want("signal 101 SIGTERM group", "signal 102 SIGTERM group", "signal 101 SIGKILL group")
}

func contains(acts []string, prefix string) bool {
	for _, a := range acts {
		if strings.HasPrefix(a, prefix) {
			return true
		}
	}
	return false
}

func TestSnapshot(t *testing.T) {
	h := newHarness(t, testConfig(t, func(c *config.Config) { c.Restart.Limit = 5 }), Options{})
	pids := h.start()
	if s := h.m.Snapshot(); s.Ready || s.Phase != "starting" || len(s.Procs) != 2 || s.Procs[0].State != "starting" {
		t.Fatalf("while starting: %+v", s)
	}
	h.ready(pids...)
	h.notify(pids[1], "STATUS=warm")
	h.exit(pids[0], "exit status 1")
	h.advance(time.Second)
	h.ready(h.started()...)
	h.step(Reload{})
	s := h.m.Snapshot()
	if !s.Ready || s.Phase != "reloading" || s.Generation != 1 || s.Budget.Used != 1 || s.Budget.Limit != 5 || s.Budget.Window != time.Minute {
		t.Errorf("during a reload: %+v", s)
	}
	type row struct {
		slot, pid, gen int
		state, status  string
		restarts       int
	}
	var got []row
	for _, p := range s.Procs {
		got = append(got, row{p.Slot, p.PID, p.Generation, p.State, p.Status, p.Restarts})
	}
	want := []row{{0, 103, 1, "ready", "", 1}, {0, 104, 2, "starting", "", 1}, {1, 102, 1, "ready", "warm", 0}, {1, 105, 2, "starting", "", 0}}
	if !slices.Equal(got, want) {
		t.Errorf("procs\n%v, want\n%v", got, want)
	}
	if len(s.Listeners) != 1 || s.Listeners[0] != (Listener{"http", "tcp://127.0.0.1:8080"}) {
		t.Errorf("listeners %v", s.Listeners)
	}
	h.step(Stop{Signal: "terminated"})
	if s := h.m.Snapshot(); s.Ready || s.Procs[0].State != "stopping" || s.LastReload.Err == nil {
		t.Errorf("stopping: %+v", s)
	}
}

func TestOperatorRestart(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	pids := h.serve()
	rep, got := reply()
	h.step(Restart{Slot: 1, Reply: rep})
	h.want("start g1 s1 = 103")
	if s := signalsTo(h.take(), pids[1]); len(s) != 0 || len(*got) != 0 {
		t.Fatalf("before the replacement is ready: old got %v, reply %+v", s, *got)
	}
	h.ready(103)
	if s := signalsTo(h.take(), pids[1]); len(s) != 1 || s[0] != "SIGTERM group" {
		t.Errorf("old worker got %v once its replacement was ready, want SIGTERM", s)
	}
	if c := h.m.Snapshot().Counts.Restarts; c["operator"] != 1 || c["crash"] != 0 {
		t.Errorf("restarts by reason %v, want one by the operator", c)
	}
	if len(*got) != 1 || (*got)[0].Err != nil || h.m.Snapshot().Restarts != 0 {
		t.Errorf("reply %+v, restarts %d (an operator's restart spends no budget)", *got, h.m.Snapshot().Restarts)
	}
	for _, tt := range []struct {
		slot int
		want string
	}{{2, "no slot 2 (the slots are 0 to 1)"}, {-1, "no slot -1"}} {
		rep, got := reply()
		h.step(Restart{Slot: tt.slot, Reply: rep})
		if len(*got) != 1 || !strings.Contains((*got)[0].Err.Error(), tt.want) {
			t.Errorf("restart %d: %+v, want %q", tt.slot, *got, tt.want)
		}
	}
	// A replacement that dies before it is ready fails the restart.
	rep, got = reply()
	h.step(Restart{Slot: 0, Reply: rep})
	h.exit(104, "exit status 1")
	if len(*got) != 1 || !strings.Contains((*got)[0].Err.Error(), "worker 0 (pid 104) exited before it was ready: exit status 1") {
		t.Errorf("reply %+v", *got)
	}
	// While a reload runs, the pool is not the operator's to change.
	h.step(Reload{})
	rep, got = reply()
	h.step(Restart{Slot: 0, Reply: rep})
	if len(*got) != 1 || !strings.Contains((*got)[0].Err.Error(), "baton is reloading: try again once it serves") {
		t.Errorf("during a reload: %+v", *got)
	}
}

func TestScale(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	pids := h.serve()
	rep, got := reply()
	h.step(Scale{N: 4, Reply: rep})
	h.want("start g1 s2 = 103", "start g1 s3 = 104")
	h.ready(103)
	if len(*got) != 0 {
		t.Fatal("answered before every new worker was ready")
	}
	h.ready(104)
	if len(*got) != 1 || (*got)[0].Err != nil || (*got)[0].Workers != 4 {
		t.Fatalf("scale to 4: %+v", *got)
	}
	rep, got = reply()
	h.step(Scale{N: -3, Relative: true, Reply: rep})
	acts := h.take()
	for _, pid := range []int{pids[1], 103, 104} {
		if s := signalsTo(acts, pid); len(s) != 1 || s[0] != "SIGTERM group" {
			t.Errorf("worker %d got %v on the scale down, want SIGTERM (a drain)", pid, s)
		}
	}
	if len(*got) != 1 || (*got)[0].Workers != 1 {
		t.Fatalf("scale -3: %+v", *got)
	}
	// The drained extras exit; nothing replaces them.
	for _, pid := range []int{pids[1], 103, 104} {
		h.exit(pid, "exit status 0")
	}
	h.advance(time.Minute)
	h.none("start ")
	if s := h.m.Snapshot(); len(s.Procs) != 1 || s.Procs[0].PID != pids[0] {
		t.Errorf("after the scale down: %+v", s.Procs)
	}
	for _, tt := range []struct {
		ev   Scale
		want string
	}{
		{Scale{N: 0}, "supervisor: scale: 0 workers: baton keeps 1 to 1024"},
		{Scale{N: 1025}, "supervisor: scale: 1025 workers: baton keeps 1 to 1024"},
		{Scale{N: -1, Relative: true}, "supervisor: scale: -1 from 1 worker leaves 0: baton keeps 1 to 1024 (baton stop stops it)"},
		{Scale{N: 1024, Relative: true}, "supervisor: scale: +1024 from 1 worker makes 1025: baton keeps 1 to 1024 (baton scale +1023 makes 1024)"},
	} {
		rep, got := reply()
		tt.ev.Reply = rep
		h.step(tt.ev)
		if len(*got) != 1 || (*got)[0].Err == nil || (*got)[0].Err.Error() != tt.want {
			t.Errorf("%+v: %+v, want the error %q", tt.ev, *got, tt.want)
		}
	}
	// A reload keeps the scaled count (TestScaledCountHolds).
	h.step(Reload{})
	if s := h.started(); len(s) != 1 {
		t.Errorf("the reload after scaling started %v, want the scaled 1 worker", s)
	}
}

// A relative count that leaves too few or too many workers is refused
// with what it would leave and the count that would do.
func TestScaleOutOfRange(t *testing.T) {
	for _, tt := range []struct {
		n, was int
		want   string
	}{
		{-5, 3, "-5 from 3 workers leaves -2: baton keeps 1 to 1024 (baton scale -2 leaves 1)"},
		{-1, 1, "-1 from 1 worker leaves 0: baton keeps 1 to 1024 (baton stop stops it)"},
		{+1100, 4, "+1100 from 4 workers makes 1104: baton keeps 1 to 1024 (baton scale +1020 makes 1024)"},
		{+1, 1024, "+1 from 1024 workers makes 1025: baton keeps 1 to 1024"},
	} {
		if got := outOfRange(Scale{N: tt.n, Relative: true}, tt.was).Error(); got != "supervisor: scale: "+tt.want {
			t.Errorf("%+d from %d: %q, want %q", tt.n, tt.was, got, tt.want)
		}
	}
}

func TestScaleUpNotReadyInTime(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.serve()
	rep, got := reply()
	h.step(Scale{N: 1, Relative: true, Reply: rep})
	h.advance(time.Minute)
	if len(*got) != 1 || !strings.Contains((*got)[0].Err.Error(), "not every worker was ready within 1m0s (2 of 3 are)") {
		t.Fatalf("reply %+v", *got)
	}
	// The pool may be changed again.
	rep, got = reply()
	h.step(Scale{N: 2, Reply: rep})
	if len(*got) != 1 || (*got)[0].Err != nil {
		t.Errorf("scale back to 2: %+v", *got)
	}
}

func TestStopAnswersOnceDone(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	pids := h.serve()
	rep, got := reply()
	h.step(Stop{Reply: rep})
	h.want("no more upgrades", "systemd STOPPING=1", "signal 101 SIGTERM group")
	for _, pid := range pids {
		h.exit(pid, "exit status 0")
	}
	if !h.m.Done() || len(*got) != 0 {
		t.Fatalf("done %v, reply %+v before Finish", h.m.Done(), *got)
	}
	if err := h.m.Finish(); err != nil || len(*got) != 1 || (*got)[0].Err != nil {
		t.Errorf("finish: %v, reply %+v", err, *got)
	}
}

func TestCounts(t *testing.T) {
	h := newHarness(t, testConfig(t, func(c *config.Config) { c.Worker.Count = 1 }), Options{})
	pid := h.serve()[0]
	for range 3 { // crashes
		h.exit(pid, "exit status 1")
		h.advance(time.Minute)
		pid = h.started()[0]
		h.ready(pid)
		h.take()
	}
	for range 2 { // reloads that work
		h.step(Reload{})
		h.advance(200 * time.Millisecond)
		old := pid
		pid = h.started()[0]
		h.ready(pid)
		h.exit(old, "exit status 0")
		h.take()
	}
	h.step(Reload{}) // one rolled back
	h.exit(h.started()[0], "exit status 1")
	c := h.m.Snapshot().Counts
	if c.Restarts["crash"] != 3 || c.Reloads["ok"] != 2 || c.Reloads["rolled_back"] != 1 || c.Reloads["failed"] != 0 || c.GiveUps != 0 {
		t.Errorf("counts %+v", c)
	}
	// 0.2 s each for the two that worked, 0 for the rollback.
	if c.ReloadSeconds[0] != 1 || c.ReloadSeconds[2] != 3 || c.ReloadSeconds[len(ReloadBuckets)] != 3 || c.ReloadSum != 400*time.Millisecond {
		t.Errorf("reload seconds %v, sum %s", c.ReloadSeconds, c.ReloadSum)
	}
}

func TestRollingReload(t *testing.T) {
	h := newHarness(t, testConfig(t, func(c *config.Config) { c.Worker.Count = 3 }), Options{})
	old := h.serve()
	h.env.nextCfg = testConfig(t, func(c *config.Config) { c.Worker.Count = 3; c.Reload.Surge = 1 })
	peak := 0
	live := func() int {
		n := len(h.env.live)
		peak = max(peak, n)
		return n
	}
	rep, got := reply()
	h.step(Reload{Reply: rep})
	for i, oldPID := range old {
		started := h.started()
		h.take()
		if len(started) != 1 {
			t.Fatalf("step %d: started %v, want one new worker", i, started)
		}
		if n := live(); n != 4 {
			t.Errorf("step %d: %d workers, want count+surge = 4", i, n)
		}
		h.ready(started[0])
		if s := signalsTo(h.take(), oldPID); len(s) != 1 || s[0] != "SIGTERM group" {
			t.Fatalf("step %d: old worker %d got %v once slot %d's new one was ready, want SIGTERM", i, oldPID, s, i)
		}
		if i < len(old)-1 && len(h.started()) != 0 {
			t.Fatalf("step %d: a new worker started before the old one left", i)
		}
		h.exit(oldPID, "exit status 0")
		live()
	}
	if peak != 4 || len(*got) != 1 || (*got)[0].Err != nil || (*got)[0].Generation != 2 {
		t.Errorf("peak %d workers, reply %+v; want 4 and generation 2", peak, *got)
	}
}

func TestRollingReloadRollsBack(t *testing.T) {
	h := newHarness(t, testConfig(t, func(c *config.Config) { c.Worker.Count = 3 }), Options{})
	old := h.serve()
	h.env.nextCfg = testConfig(t, func(c *config.Config) { c.Worker.Count = 3; c.Reload.Surge = 1 })
	rep, got := reply()
	h.step(Reload{Reply: rep})
	first := h.started()[0]
	h.ready(first)
	h.exit(old[0], "exit status 0") // slot 0 switched
	second := h.started()[1]
	h.take()
	h.exit(second, "exit status 1") // the new config is broken
	acts := h.take()
	if len(*got) != 1 || !errors.Is((*got)[0].Err, errRolledBack) {
		t.Fatalf("reply %+v, want rolled back", *got)
	}
	if s := signalsTo(acts, first); len(s) != 1 || s[0] != "SIGTERM group" {
		t.Errorf("the new generation's ready worker got %v, want SIGTERM", s)
	}
	if !contains(acts, "start g1 s0 = ") {
		t.Errorf("slot 0 was not given back to an old-config worker: %v", acts)
	}
	for _, pid := range old[1:] {
		if s := signalsTo(acts, pid); len(s) != 0 {
			t.Errorf("old worker %d, never switched, got %v", pid, s)
		}
	}
	if s := h.m.Snapshot(); s.Generation != 1 {
		t.Errorf("serving generation %d after the rollback, want 1", s.Generation)
	}
}

// The snapshot's desired count is the pool's size, the starting
// generation's before one serves, and moves with a scale; each slot of
// the pool has its unplanned restarts, a slot whose worker crashed too.
func TestSnapshotDesired(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	pids := h.start()
	if s := h.m.Snapshot(); s.Desired != 2 || !slices.Equal(s.SlotRestarts, []int{0, 0}) {
		t.Errorf("while starting: desired %d, restarts by slot %v, want 2, [0 0]", s.Desired, s.SlotRestarts)
	}
	h.ready(pids...)
	h.exit(pids[1], "exit status 1")
	if s := h.m.Snapshot(); s.Desired != 2 || !slices.Equal(s.SlotRestarts, []int{0, 1}) {
		t.Errorf("slot 1 crashed, not yet replaced: desired %d, restarts by slot %v, want 2, [0 1]", s.Desired, s.SlotRestarts)
	}
	h.advance(time.Second)
	h.ready(h.started()...)
	h.step(Scale{N: 3})
	if s := h.m.Snapshot(); s.Desired != 3 || !slices.Equal(s.SlotRestarts, []int{0, 1, 0}) {
		t.Errorf("scaled to 3: desired %d, restarts by slot %v, want 3, [0 1 0]", s.Desired, s.SlotRestarts)
	}
	h.ready(h.started()...)
	h.step(Scale{N: 1})
	if s := h.m.Snapshot(); s.Desired != 1 || !slices.Equal(s.SlotRestarts, []int{0}) {
		t.Errorf("scaled to 1: desired %d, restarts by slot %v, want 1, [0]", s.Desired, s.SlotRestarts)
	}
}
