package lifecycle

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
)

// fakeEnv is a lifecycle.Env that forks nothing: it hands out pids,
// records every action as a line, and keeps a fake clock whose timers
// fire only when the test advances it.
type fakeEnv struct {
	t       *testing.T
	now     time.Time
	timers  []*fakeTimer
	seq     int
	nextPID int
	live    map[int]bool // children: workers and others
	parents map[int]int
	rss     map[int]int64
	acts    []string
	// replaces: the worker each started one replaces (Spawn.Replaces).
	replaces map[int]int

	failStarts int // the next this many Starts fail
	// Load's outcome: nextCfg or loadErr. loads are the Loads not
	// answered yet; the harness answers them after each event unless
	// holdLoads.
	nextCfg    *config.Config
	loadErr    error
	loads      int
	holdLoads  bool
	cannot     error // CanUpgrade's answer
	upgradeErr error // Upgrade's answer
	upgrades   int
	knowsSucc  bool // SignalSuccessor finds the successor
	watchdog   time.Duration
}

type fakeTimer struct {
	at      time.Time
	seq     int
	t       Timer
	stopped bool
}

func newFakeEnv(t *testing.T) *fakeEnv {
	return &fakeEnv{t: t, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), nextPID: 100,
		live: map[int]bool{}, parents: map[int]int{}, rss: map[int]int64{}, replaces: map[int]int{}}
}

func (e *fakeEnv) act(format string, args ...any) {
	e.acts = append(e.acts, fmt.Sprintf(format, args...))
}

func (e *fakeEnv) Now() time.Time { return e.now }

func (e *fakeEnv) After(d time.Duration, t Timer) func() {
	e.seq++
	ft := &fakeTimer{at: e.now.Add(d), seq: e.seq, t: t}
	e.timers = append(e.timers, ft)
	return func() { ft.stopped = true }
}

func (e *fakeEnv) Start(w Spawn) (int, error) {
	if e.failStarts > 0 {
		e.failStarts--
		e.act("start g%d s%d failed", w.Generation, w.Slot)
		return 0, errors.New("fork/exec: resource temporarily unavailable")
	}
	e.nextPID++
	e.live[e.nextPID] = true
	e.replaces[e.nextPID] = w.Replaces
	e.act("start g%d s%d = %d", w.Generation, w.Slot, e.nextPID)
	return e.nextPID, nil
}

func (e *fakeEnv) Signal(pid int, sig Signal, to Target) {
	e.act("signal %d %s %s", pid, sig, [...]string{"process", "group", "orphan"}[to])
}

func (e *fakeEnv) Children() []int {
	var pids []int
	for pid := range e.live {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids
}

func (e *fakeEnv) ParentOf(pid int) int { return e.parents[pid] }
func (e *fakeEnv) RSS(pid int) int64    { return e.rss[pid] }

func (e *fakeEnv) Open(cfg *config.Config, store bool) error {
	e.act("open store=%v", store)
	return nil
}
func (e *fakeEnv) Release(inUse []*config.Config, inForce *config.Config) {
	e.act("release %d", len(inUse))
}
func (e *fakeEnv) CloseAll(shared bool)   { e.act("close sockets shared=%v", shared) }
func (e *fakeEnv) DrainsAccepted(pid int) { e.act("drains accepted %d", pid) }
func (e *fakeEnv) Route(r Routes) {
	e.act("route ready=%v slots=%v shared=%v", r.Ready, r.Slots, r.Shared)
}

func (e *fakeEnv) Notify(state string) { e.act("systemd %s", strings.ReplaceAll(state, "\n", " ")) }
func (e *fakeEnv) WatchdogInterval(parent int) time.Duration {
	return e.watchdog
}
func (e *fakeEnv) Load() {
	e.act("load config")
	e.loads++
}

func (e *fakeEnv) CanUpgrade() error { return e.cannot }
func (e *fakeEnv) ExeChanged() bool  { return false }
func (e *fakeEnv) Upgrade(lastGen int, scaled Scaled) error {
	e.upgrades++
	e.act("upgrade after g%d keeping %d of %d", lastGen, scaled.Workers, scaled.Config)
	return e.upgradeErr
}
func (e *fakeEnv) SignalSuccessor(sig Signal) bool {
	e.act("signal successor %s %v", sig, e.knowsSucc)
	return e.knowsSucc
}
func (e *fakeEnv) NoMoreUpgrades() { e.act("no more upgrades") }
func (e *fakeEnv) Serving()        { e.act("serving") }
func (e *fakeEnv) HandOver(pid int) {
	e.act("hand over to %d", pid)
}
func (e *fakeEnv) TakeOver(status string, cfg *config.Config) { e.act("take over: %s", status) }

// harness drives one Machine through a fakeEnv.
type harness struct {
	*testing.T
	logs *strings.Builder // what the Machine logged
	env  *fakeEnv
	m    *Machine
	cfg  *config.Config
}

// testConfig is a valid configuration: two workers that notify, with
// changes made by mod.
func testConfig(t *testing.T, mod func(*config.Config)) *config.Config {
	t.Helper()
	c := &config.Config{
		Listen: []config.Listener{{Name: "http", Address: "tcp://127.0.0.1:8080"}},
		Worker: config.Worker{Command: []string{"worker"}, Count: 2},
	}
	if mod != nil {
		mod(c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newHarness(t *testing.T, cfg *config.Config, opts Options) *harness {
	env := newFakeEnv(t)
	logs := &strings.Builder{}
	opts.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(testLog{t}, logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.PID = 1
	h := &harness{T: t, logs: logs, env: env, m: New(env, opts), cfg: cfg}
	env.nextCfg = cfg
	return h
}

// start starts the Machine and returns the pids of the workers it
// started.
func (h *harness) start() []int {
	h.Helper()
	if err := h.m.Start(h.cfg); err != nil {
		h.Fatal(err)
	}
	return h.started()
}

// serve starts the Machine and makes its first generation ready.
func (h *harness) serve() []int {
	h.Helper()
	pids := h.start()
	h.ready(pids...)
	h.take()
	return pids
}

// started returns the pids started since the last take, in order.
func (h *harness) started() []int {
	var pids []int
	for _, a := range h.env.acts {
		var g, s, pid int
		if n, _ := fmt.Sscanf(a, "start g%d s%d = %d", &g, &s, &pid); n == 3 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// step gives the Machine ev, then the configuration each Load asked for
// (unless the test holds them).
func (h *harness) step(ev Event) {
	h.m.Step(ev)
	h.answerLoads()
}

// answerLoads delivers a Loaded for each Load not answered yet, unless
// the test holds them.
func (h *harness) answerLoads() {
	for !h.env.holdLoads && h.env.loads > 0 {
		h.env.loads--
		h.m.Step(Loaded{Config: h.env.nextCfg, Err: h.env.loadErr})
	}
}

func (h *harness) notify(pid int, fields ...string) {
	f := map[string]string{}
	for _, kv := range fields {
		k, v, _ := strings.Cut(kv, "=")
		f[k] = v
	}
	h.step(Notified{PID: pid, Fields: f})
}

func (h *harness) ready(pids ...int) {
	for _, pid := range pids {
		h.notify(pid, "READY=1")
	}
}

// exit reaps pid.
func (h *harness) exit(pid int, how string) {
	delete(h.env.live, pid)
	h.step(Exited{PID: pid, How: how})
}

// advance moves the clock by d, firing every timer due meanwhile in
// order, those the firing arms included.
func (h *harness) advance(d time.Duration) {
	end := h.env.now.Add(d)
	for {
		var next *fakeTimer
		for _, t := range h.env.timers {
			if !t.stopped && !t.at.After(end) && (next == nil || t.at.Before(next.at) || t.at.Equal(next.at) && t.seq < next.seq) {
				next = t
			}
		}
		if next == nil {
			break
		}
		next.stopped = true
		h.env.now = next.at
		h.step(next.t)
	}
	h.env.now = end
}

// take returns the actions since the last take.
func (h *harness) take() []string {
	a := h.env.acts
	h.env.acts = nil
	return a
}

// want checks that every line of want is among the actions since the
// last take (as a prefix of one, in order), and forgets them.
func (h *harness) want(want ...string) {
	h.Helper()
	acts := h.take()
	i := 0
	for _, a := range acts {
		if i < len(want) && strings.HasPrefix(a, want[i]) {
			i++
		}
	}
	if i < len(want) {
		h.Errorf("actions:\n\t%s\nwant, in order, lines starting with:\n\t%s\n(missing %q)", strings.Join(acts, "\n\t"), strings.Join(want, "\n\t"), want[i])
	}
}

// none checks that no action since the last take starts with any of
// prefixes, and forgets them.
func (h *harness) none(prefixes ...string) {
	h.Helper()
	for _, a := range h.take() {
		for _, p := range prefixes {
			if strings.HasPrefix(a, p) {
				h.Errorf("unexpected action %q", a)
			}
		}
	}
}

// reply returns a Reply func and what it got.
func reply() (func(Result), *[]Result) {
	var got []Result
	return func(r Result) { got = append(got, r) }, &got
}

func signalsTo(acts []string, pid int) []string {
	var out []string
	prefix := fmt.Sprintf("signal %d ", pid)
	for _, a := range acts {
		if s, ok := strings.CutPrefix(a, prefix); ok {
			out = append(out, s)
		}
	}
	return out
}
