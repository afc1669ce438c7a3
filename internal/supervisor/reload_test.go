package supervisor

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/control"
)

// reload asks for a reload over the control socket and waits for it.
func (h *harness) reload() (control.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return control.Ask(ctx, filepath.Join(h.dir, control.SocketName), control.Request{Command: "reload"})
}

func (h *harness) stats() *control.Stats {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := control.Ask(ctx, filepath.Join(h.dir, control.SocketName), control.Request{Command: "stats"})
	if err != nil {
		h.t.Fatal(err)
	}
	return r.Stats
}

// waitSettled waits until no reload runs and no old generation drains, so
// that only the serving generation answers.
func (h *harness) waitSettled() {
	h.t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		st := h.stats()
		if !st.Reloading && st.Draining == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("still busy: %+v", st)
		}
	}
}

// A reload asked on the control socket is answered once baton gave back
// what the reload left resident: a trim ran at or after its end.
func TestReloadAnsweredTrimmed(t *testing.T) {
	h := startHarness(t, testConfig("serve", 2, nil))
	h.waitNote("READY=1")
	for i := range 3 {
		asked := time.Now()
		resp, err := h.reload()
		if err != nil || !resp.OK {
			t.Fatalf("reload %d: %+v, %v", i+1, resp, err)
		}
		// The reload ended no earlier than asked + its duration.
		ended := asked.Add(time.Duration(resp.Seconds * float64(time.Second)))
		if st := h.stats(); st.Trimmed.Before(ended) {
			t.Fatalf("reload %d ended after %v, answered; the last trim was at %v, before that", i+1, ended.Format(time.StampMicro), st.Trimmed.Format(time.StampMicro))
		}
	}
}

// sample is one parsed test-worker response.
type sample struct {
	pid, gen int
	rev      string
	names    string
}

// serving samples answers until want distinct pids were seen.
func (h *harness) serving(want int) map[int]sample {
	h.t.Helper()
	seen := map[int]sample{}
	for i := 0; i < 1000 && len(seen) < want; i++ {
		body, err := tryGet(h.addr)
		if err != nil {
			continue
		}
		f := strings.Fields(body)
		pid, _ := strconv.Atoi(f[1])
		gen, _ := strconv.Atoi(f[15])
		seen[pid] = sample{pid: pid, gen: gen, rev: f[13], names: f[5]}
	}
	return seen
}

func (h *harness) config(mode string, count int, mutate func(*config.Config)) *config.Config {
	return testConfig(mode, count, func(c *config.Config) {
		c.Listen[0].Address = "tcp://" + h.addr
		if mutate != nil {
			mutate(c)
		}
	})
}

func waitGone(t *testing.T, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d still alive", pid)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// readyPIDs returns the pids of generation gen's ready workers, from the
// supervisor's log.
func (h *harness) readyPIDs(gen int) []int {
	re := regexp.MustCompile(`msg="worker ready" slot=\d+ pid=(\d+) generation=` + strconv.Itoa(gen) + ` `)
	var out []int
	for _, m := range re.FindAllStringSubmatch(h.out.String(), -1) {
		pid, _ := strconv.Atoi(m[1])
		out = append(out, pid)
	}
	return out
}

func pidList(m map[int]sample) []int {
	var out []int
	for pid := range m {
		out = append(out, pid)
	}
	return out
}

func TestReloadReplacesGeneration(t *testing.T) {
	h := startHarness(t, testConfig("serve", 2, nil))
	h.waitNote("READY=1")
	old := h.serving(2)
	h.setConfig(h.config("serve", 2, func(c *config.Config) { c.Worker.Env["REV"] = "1" }), nil)
	resp, err := h.reload()
	if err != nil || resp.Generation != 2 || resp.Workers != 2 {
		t.Fatalf("reload = %+v, %v; want generation 2 with 2 workers", resp, err)
	}
	if n := h.waitNote("RELOADING=1"); !strings.Contains(n, "MONOTONIC_USEC=") {
		t.Errorf("reload start message %q lacks MONOTONIC_USEC", n)
	}
	if n := h.waitNote("READY=1"); !strings.Contains(n, "generation 2") || !strings.Contains(n, "last reload ok") {
		t.Errorf("reload end message %q, want READY=1 with the new generation and outcome", n)
	}
	// The old workers drain (they may still take a connection until they
	// have closed their listener), then only the new ones answer.
	waitGone(t, pidList(old)...)
	now := h.serving(2)
	for pid, a := range now {
		if old[pid].pid != 0 || a.gen != 2 || a.rev != "1" {
			t.Errorf("after the reload %+v answered, want only new generation-2 workers with REV=1", a)
		}
	}
}

// A reload that cannot start leaves the serving workers as they are and
// says why.
func TestReloadFailuresRollBack(t *testing.T) {
	tests := []struct {
		name   string
		cfg    func(h *harness) (*config.Config, error)
		want   string
		within time.Duration
	}{
		{"invalid config", func(h *harness) (*config.Config, error) {
			return nil, errors.New("config: baton.toml:3: worker.count: must be at least 1, got -1")
		}, "supervisor: reload: config: baton.toml:3: worker.count: must be at least 1, got -1", time.Second},
		{"worker exits at once", func(h *harness) (*config.Config, error) {
			return h.config("exit1", 2, nil), nil
		}, "reload rolled back: worker ", 5 * time.Second},
		{"worker never ready", func(h *harness) (*config.Config, error) {
			return h.config("silent", 2, func(c *config.Config) { c.Reload.Timeout = config.Duration(500 * time.Millisecond) }), nil
		}, "did not become ready within 500ms", 5 * time.Second},
		{"worker never writes its readiness line", func(h *harness) (*config.Config, error) {
			return h.config("fd-silent", 2, func(c *config.Config) {
				c.Worker.Ready = config.ReadyFD
				c.Reload.Timeout = config.Duration(500 * time.Millisecond)
			}), nil
		}, "did not become ready within 500ms: baton waits for a line on the descriptor BATON_READY_FD names", 5 * time.Second},
		{"listener cannot bind", func(h *harness) (*config.Config, error) {
			return h.config("serve", 2, func(c *config.Config) {
				c.Listen = append(c.Listen, config.Listener{Name: "admin", Address: "tcp://192.0.2.1:1"})
			}), nil
		}, `listener "admin"`, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHarness(t, testConfig("serve", 2, nil))
			h.waitNote("READY=1")
			old := h.serving(2)
			h.setConfig(tt.cfg(h))
			start := time.Now()
			_, err := h.reload()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("reload error = %v, want it to contain %q", err, tt.want)
			}
			if d := time.Since(start); d > tt.within {
				t.Errorf("the reload took %s to fail, want under %s", d, tt.within)
			}
			if n := h.waitNote("READY=1"); !strings.Contains(n, "last reload failed") || !strings.Contains(n, "generation 1") {
				t.Errorf("after a failed reload systemd got %q, want READY=1 with the failure and generation 1", n)
			}
			// The new workers are stopped: only the old ones remain.
			h.waitSettled()
			if st := h.stats(); st.Workers != 2 || st.Generation != 1 {
				t.Errorf("stats after rollback: %+v, want the 2 old workers of generation 1 only", st)
			}
			now := h.serving(2)
			for pid := range now {
				if old[pid].pid == 0 {
					t.Errorf("pid %d answered after the failed reload; want the old workers %v", pid, pidList(old))
				}
			}
		})
	}
}

// Reload requests during a reload are served by exactly one more: 100
// SIGHUPs make at most two reloads, never overlapping, and the last
// configuration wins.
func TestReloadsCoalesce(t *testing.T) {
	h := startHarness(t, testConfig("serve", 2, nil))
	h.waitNote("READY=1")
	for i := 1; i <= 100; i++ {
		h.setConfig(h.config("serve", 2, func(c *config.Config) { c.Worker.Env["REV"] = strconv.Itoa(i) }), nil)
		h.sigs <- syscall.SIGHUP
	}
	// Each reload sends RELOADING=1 then READY=1; one in flight at a time.
	reloads, inFlight := 0, false
	for reloads == 0 || inFlight || h.stats().Reloading {
		var n string
		select {
		case n = <-h.notes:
		case <-time.After(15 * time.Second):
			t.Fatal("no message from a reload")
		}
		switch {
		case strings.HasPrefix(n, "RELOADING=1"):
			if inFlight {
				t.Fatal("a reload started while another was under way")
			}
			reloads++
			inFlight = true
		case strings.HasPrefix(n, "READY=1"):
			inFlight = false
		}
	}
	if reloads > 2 {
		t.Errorf("100 SIGHUPs made %d reloads, want at most 2", reloads)
	}
	h.waitSettled()
	for _, a := range h.serving(2) {
		if a.rev != "100" {
			t.Errorf("worker %d runs REV=%s, want the last configuration (100)", a.pid, a.rev)
		}
	}
}

// Everything about the workers comes from the reloaded config: count,
// environment, and listeners (an added one is bound; a removed one is
// closed once its generation has drained).
func TestReloadAppliesListenersAndCount(t *testing.T) {
	h := startHarness(t, testConfig("serve", 2, nil))
	h.waitNote("READY=1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := ln.Addr().String()
	ln.Close()
	h.setConfig(h.config("serve", 3, func(c *config.Config) {
		c.Listen = append(c.Listen, config.Listener{Name: "admin", Address: "tcp://" + admin})
	}), nil)
	if _, err := h.reload(); err != nil {
		t.Fatal(err)
	}
	h.waitSettled()
	now := h.serving(3)
	if len(now) != 3 {
		t.Fatalf("after reload to 3 workers saw %d", len(now))
	}
	for _, a := range now {
		if a.names != "http:admin" {
			t.Errorf("worker %d got LISTEN_FDNAMES=%s, want http:admin", a.pid, a.names)
		}
	}
	c, err := net.Dial("tcp", admin)
	if err != nil {
		t.Fatalf("the added listener %s is not bound: %v", admin, err)
	}
	c.Close()

	h.setConfig(h.config("serve", 1, nil), nil)
	if _, err := h.reload(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pidList(now)...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", admin)
		if err != nil {
			break // closed with the generation that used it
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("removed listener %s still accepts after its generation drained", admin)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := h.serving(1); len(got) != 1 {
		t.Errorf("after reload to 1 worker saw %v", got)
	}
}

// At most reload.max_draining old generations drain at once; one more
// and the oldest is killed.
func TestMaxDraining(t *testing.T) {
	cfg := testConfig("stubborn", 1, func(c *config.Config) {
		c.Worker.DrainTimeout = config.Duration(time.Minute)
		c.Reload.MaxDraining = 1
	})
	h := startHarness(t, cfg)
	h.waitNote("READY=1")
	for i := 0; i < 2; i++ {
		h.setConfig(h.config("stubborn", 1, func(c *config.Config) {
			c.Worker.DrainTimeout = config.Duration(time.Minute)
			c.Reload.MaxDraining = 1
		}), nil)
		if _, err := h.reload(); err != nil {
			t.Fatal(err)
		}
	}
	// Generation 1 was killed when generation 2 began draining too.
	waitGone(t, h.readyPIDs(1)...)
	for _, pid := range h.readyPIDs(2) {
		if !alive(pid) {
			t.Errorf("generation 2's worker %d is gone; it should still be draining", pid)
		}
	}
	// The pid is gone once reaped; baton counts the generation drained
	// when its loop has taken the exit in, a moment later.
	deadline := time.Now().Add(10 * time.Second)
	st := h.stats()
	for st.Draining != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		st = h.stats()
	}
	if st.Draining != 1 {
		t.Errorf("%d generations draining, want 1", st.Draining)
	}
	// The workers ignore SIGTERM and drain_timeout is a minute: a second
	// stop signal ends them now.
	h.sigs <- syscall.SIGTERM
	h.sigs <- syscall.SIGTERM
}

// With reload.surge = 1 a new generation starts one worker at a time,
// each after the previous one is ready.
func TestReloadSurge(t *testing.T) {
	h := startHarness(t, testConfig("serve", 3, nil))
	h.waitNote("READY=1")
	h.setConfig(h.config("serve", 3, func(c *config.Config) { c.Reload.Surge = 1 }), nil)
	if _, err := h.reload(); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`msg="worker (started|ready)" slot=\d+ pid=\d+ generation=2\b`)
	var seq []string
	for _, m := range re.FindAllStringSubmatch(h.out.String(), -1) {
		seq = append(seq, m[1])
	}
	want := []string{"started", "ready", "started", "ready", "started", "ready"}
	if strings.Join(seq, " ") != strings.Join(want, " ") {
		t.Errorf("generation 2 went %v, want one at a time: %v", seq, want)
	}
}

// The configuration is read off the event loop: while a reload's read
// hangs, status answers at once and a killed worker is replaced; the
// reload goes on once the read returns.
func TestReloadReadsConfigOffTheLoop(t *testing.T) {
	h := startHarness(t, testConfig("serve", 1, nil))
	h.waitNote("READY=1")
	path := filepath.Join(h.dir, control.SocketName)
	status := func() (*control.Status, time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		begin := time.Now()
		r, err := control.Ask(ctx, path, control.Request{Command: "status"})
		if err != nil || r.Status == nil {
			t.Fatalf("status while the config is read: %+v, %v", r, err)
		}
		return r.Status, time.Since(begin)
	}
	st, _ := status()
	victim := st.Workers[0].PID

	h.cfgMu.Lock() // the reload's read hangs until unlocked
	locked := true
	defer func() {
		if locked {
			h.cfgMu.Unlock()
		}
	}()
	answer := make(chan error, 1)
	go func() {
		resp, err := h.reload()
		if err == nil && !resp.OK {
			err = errors.New(resp.Error)
		}
		answer <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(h.out.String(), "msg=reloading"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the reload did not begin")
		}
	}
	syscall.Kill(victim, syscall.SIGKILL)
	var slowest time.Duration
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, took := status()
		slowest = max(slowest, took)
		if st.Phase != "reloading" {
			t.Fatalf("phase %q while the config is read, want reloading", st.Phase)
		}
		if len(st.Workers) == 1 && st.Workers[0].PID != victim && st.Workers[0].State == "ready" {
			t.Logf("worker %d killed while the config was read: replaced by %d; the slowest status took %s", victim, st.Workers[0].PID, slowest)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker %d was not replaced while the config was read: %+v", victim, st.Workers)
		}
	}
	if slowest > 500*time.Millisecond {
		t.Errorf("a status took %s while the config was read; want each within 500ms", slowest)
	}
	h.cfgMu.Unlock()
	locked = false
	select {
	case err := <-answer:
		if err != nil {
			t.Fatalf("reload once the read returned: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no answer to the reload")
	}
}
