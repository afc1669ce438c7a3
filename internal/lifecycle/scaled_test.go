package lifecycle

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
)

// A scaled count holds across reloads and self-upgrades until the
// configuration's worker.count itself changes, compared with the count
// of the configuration in force, never with the scaled one.
func TestScaledCountHolds(t *testing.T) {
	count := func(n int) func(*config.Config) { return func(c *config.Config) { c.Worker.Count = n } }
	type step struct {
		do   string // "scale N", "reload N" (worker.count N), "roll back N" (a reload of N whose workers fail)
		want int    // workers of the serving generation after it
		line string // in the status line after it ("-": no "scaled")
	}
	for _, tt := range []struct {
		name  string
		steps []step
	}{
		{"a reload keeps it", []step{{"scale 4", 4, "scaled to 4, config 2"}, {"reload 2", 4, "scaled to 4, config 2"}, {"reload 2", 4, "scaled to 4, config 2"}}},
		{"a new count replaces it", []step{{"scale 4", 4, ""}, {"reload 3", 3, "-"}, {"reload 3", 3, "-"}}},
		{"a new count equal to it", []step{{"scale 4", 4, ""}, {"reload 4", 4, "-"}, {"reload 2", 2, "-"}}},
		{"scaled down", []step{{"scale 1", 1, "scaled to 1, config 2"}, {"reload 2", 1, "scaled to 1, config 2"}}},
		{"scaled back to the config's", []step{{"scale 4", 4, ""}, {"scale 2", 2, "-"}, {"reload 2", 2, "-"}, {"reload 5", 5, "-"}}},
		{"a new count, then scaled again", []step{{"scale 4", 4, ""}, {"reload 3", 3, "-"}, {"scale 6", 6, "scaled to 6, config 3"}, {"reload 3", 6, "scaled to 6, config 3"}}},
		{"a rolled back reload keeps it", []step{{"scale 4", 4, ""}, {"roll back 3", 4, "scaled to 4, config 2"}, {"reload 2", 4, "scaled to 4, config 2"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t, nil), Options{})
			h.serve()
			for _, st := range tt.steps {
				var verb string
				var n int
				fmt.Sscanf(st.do, "%s %d", &verb, &n)
				switch verb {
				case "scale":
					h.step(Scale{N: n})
					h.ready(h.started()...)
				case "reload":
					h.env.nextCfg = testConfig(t, count(n))
					h.step(Reload{})
					h.ready(h.started()...)
				case "roll":
					fmt.Sscanf(st.do, "roll back %d", &n)
					h.env.nextCfg = testConfig(t, count(n))
					rep, got := reply()
					h.step(Reload{Reply: rep})
					h.exit(h.started()[0], "exit status 1")
					if len(*got) != 1 || !errors.Is((*got)[0].Err, errRolledBack) {
						t.Fatalf("%s: %+v, want a rollback", st.do, *got)
					}
				}
				h.take()
				s := h.m.Snapshot()
				if s.Desired != st.want || h.m.current.readyCount() != st.want {
					t.Errorf("after %q: %d workers (%d ready), want %d", st.do, s.Desired, h.m.current.readyCount(), st.want)
				}
				line := h.m.statusLine()
				switch {
				case st.line == "-" && strings.Contains(line, "scaled"):
					t.Errorf("after %q: status %q, want it not scaled", st.do, line)
				case st.line != "-" && !strings.Contains(line, st.line):
					t.Errorf("after %q: status %q, want %q in it", st.do, line, st.line)
				}
			}
		})
	}
}

// A self-upgrade hands the scaled count over; the successor keeps it
// while its configuration's worker.count is the one it was scaled from.
func TestScaledCountAcrossUpgrade(t *testing.T) {
	h := newHarness(t, testConfig(t, nil), Options{})
	h.serve()
	h.step(Scale{N: 4})
	h.ready(h.started()...)
	h.take()
	h.step(Reload{Upgrade: true})
	h.want("systemd RELOADING=1", "upgrade after g1 keeping 4 of 2")

	for _, tt := range []struct {
		count, want int
	}{{2, 4}, {3, 3}, {4, 4}} {
		t.Run(fmt.Sprintf("worker.count %d", tt.count), func(t *testing.T) {
			cfg := testConfig(t, func(c *config.Config) { c.Worker.Count = tt.count })
			h := newHarness(t, cfg, Options{Parent: 50, LastGen: 1, Scaled: Scaled{Workers: 4, Config: 2}})
			if got := len(h.start()); got != tt.want {
				t.Errorf("the successor started %d workers, want %d", got, tt.want)
			}
			if s := h.m.Snapshot(); s.Desired != tt.want {
				t.Errorf("target %d, want %d", s.Desired, tt.want)
			}
		})
	}
	// Unscaled, a self-upgrade hands over nothing.
	h = newHarness(t, testConfig(t, nil), Options{})
	h.serve()
	h.step(Reload{Upgrade: true})
	h.want("systemd RELOADING=1", "upgrade after g1 keeping 0 of 0")
	h.advance(time.Second)
}
