package lifecycle

import (
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
)

// What makes a worker ready, for each worker.ready.
func TestReadyBy(t *testing.T) {
	for _, tt := range []struct {
		ready string
		want  map[readySign]bool
	}{
		{"notify", map[readySign]bool{notifiedReady: true}},
		{"fd", map[readySign]bool{notifiedReady: true, wroteLine: true}},
		{"delay:500ms", map[readySign]bool{stayedUp: true}},
	} {
		cfg := testConfig(t, func(c *config.Config) { c.Worker.Ready = tt.ready })
		for _, sign := range []readySign{notifiedReady, wroteLine, stayedUp} {
			if got := readyBy(cfg, sign); got != tt.want[sign] {
				t.Errorf("ready = %q: readyBy(sign %d) = %v, want %v", tt.ready, sign, got, tt.want[sign])
			}
		}
		if got, want := readyPipe(cfg), tt.ready == "fd"; got != want {
			t.Errorf("ready = %q: readyPipe = %v, want %v", tt.ready, got, want)
		}
	}
}

// With ready = "fd" a line on the pipe makes a worker ready.
func TestReadyLine(t *testing.T) {
	h := newHarness(t, testConfig(t, func(c *config.Config) { c.Worker.Ready = config.ReadyFD }), Options{})
	pids := h.start()
	h.step(ReadyLine{PID: pids[0]})
	h.none("systemd READY=1")
	h.step(ReadyLine{PID: pids[1]})
	h.want("systemd READY=1")
}

func TestDelayReady(t *testing.T) {
	h := newHarness(t, testConfig(t, func(c *config.Config) { c.Worker.Ready = "delay:500ms" }), Options{})
	pids := h.start()
	h.ready(pids...) // ignored: readiness is staying up
	h.none("systemd READY=1")
	h.advance(500 * time.Millisecond)
	h.want("systemd READY=1")
}

// A worker still starting after ReadyHintAfter gets one warning saying
// what baton waits for and how else to report readiness; the timeout's
// error says the same.
func TestReadyHint(t *testing.T) {
	for _, tt := range []struct{ ready, waits string }{
		{"notify", `baton waits for READY=1 on NOTIFY_SOCKET (ready = \"notify\"); a program that cannot send it can write a line to the descriptor BATON_READY_FD names (ready = \"fd\")`},
		{"fd", `baton waits for a line on the descriptor BATON_READY_FD names (ready = \"fd\")`},
	} {
		t.Run(tt.ready, func(t *testing.T) {
			h := newHarness(t, testConfig(t, func(c *config.Config) {
				c.Worker.Ready = tt.ready
				c.Reload.Timeout = config.Duration(10 * time.Second)
			}), Options{})
			pids := h.start()
			h.ready(pids[1])
			h.advance(ReadyHintAfter - time.Millisecond)
			if strings.Contains(h.logs.String(), "is not ready after") {
				t.Fatalf("warned before %s:\n%s", ReadyHintAfter, h.logs)
			}
			h.advance(time.Second)
			warn := "worker 0 (pid 101) is not ready after 5s: " + tt.waits
			if n := strings.Count(h.logs.String(), warn); n != 1 {
				t.Errorf("warning %q logged %d times, want once:\n%s", warn, n, h.logs)
			}
			if strings.Contains(h.logs.String(), "worker 1 (pid 102) is not ready") {
				t.Error("a ready worker was warned about")
			}
			h.advance(10 * time.Second)
			err := h.m.Finish()
			if err == nil || !strings.Contains(err.Error(), "did not become ready within 10s: "+strings.ReplaceAll(tt.waits, `\"`, `"`)) {
				t.Errorf("start failed with %v", err)
			}
		})
	}
}
