package integration

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/loadtest"
)

// 50 panics under load, in each mode: every request but the 50 that
// panicked succeeds, and each panicking worker's replacement started
// before it exited (replace first).
func TestPanicsUnderLoad(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			// Each panic is an unplanned replacement: a budget for 50.
			b := startConfigBaton(t, hellos(2, "\n[restart]\nlimit = 1000\n"))
			addr := b.addr
			g := startLoad(t, addr, mode, 32)
			reLeaving := regexp.MustCompile(`msg="worker is leaving, starting its replacement" slot=\d+ pid=(\d+) `)
			for i := 0; i < 50; i++ {
				body, err := getOnce(addr, "/panic")
				if err == nil || !strings.Contains(err.Error(), "500") {
					t.Fatalf("GET /panic = %q, %v; want a 500", body, err)
				}
				// Wait until this panic's worker is gone (its replacement was
				// started when it said STOPPING=1), so that the 50 panics hit
				// 50 different workers, and until its replacement is ready,
				// so that the next panic leaves a worker serving however
				// long a worker takes to start.
				b.out.waitCount(reLeaving, i+1, 20*time.Second)
				m := reLeaving.FindAllStringSubmatch(b.out.String(), -1)
				b.out.wait(regexp.MustCompile(`msg="worker exited" slot=\d+ pid=`+m[len(m)-1][1]+` `), 30*time.Second)
				b.out.waitCount(reWorkerReady, 2+i+1, 30*time.Second)
			}
			waitIdle(t, b.out)
			waitServed(t, g, 300)
			r := g.Stop()
			t.Logf("50 panics, %s", r)
			if r.Failed() != 0 {
				t.Errorf("%d requests failed besides the 50 panics: %s %v", r.Failed(), r, r.Samples)
			}
			out := b.out.String()
			for _, m := range reLeaving.FindAllStringSubmatchIndex(out, -1) {
				pid := out[m[2]:m[3]]
				exit := regexp.MustCompile(`msg="worker exited" slot=\d+ pid=` + pid + ` generation=1 how="exit status 1"`).FindStringIndex(out)
				if exit == nil {
					t.Errorf("panicking worker %s did not exit 1", pid)
				} else if exit[0] < m[0] {
					t.Errorf("worker %s exited before its replacement was started", pid)
				}
			}
		})
	}
}

// A worker that grows past worker.max_memory is replaced, new first, then
// drained: not one request fails.
func TestMaxMemoryUnderLoad(t *testing.T) {
	b := startConfigBaton(t, func(addr string) string { return batonConfig(addr, 2, nil, `max_memory = "64MiB"`) })
	addr := b.addr
	g := startLoad(t, addr, loadtest.KeepAlive, 32)
	body, err := getOnce(addr, "/grow?mb=128")
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimPrefix(strings.TrimSpace(body), "hello from pid ")
	b.out.wait(regexp.MustCompile(`msg="replacing worker" slot=\d+ pid=`+pid+` .*above max_memory 64 MiB`), 10*time.Second)
	b.out.wait(regexp.MustCompile(`msg="worker exited" slot=\d+ pid=`+pid+` generation=1 how="exit status 0"`), 30*time.Second)
	waitServed(t, g, 300)
	r := g.Stop()
	t.Logf("worker %s grew to 128 MiB over max_memory 64 MiB and was replaced; load: %s", pid, r)
	if r.Failed() != 0 {
		t.Errorf("%d requests failed: %s %v", r.Failed(), r, r.Samples)
	}
	if _, ok := r.PIDs[pid]; !ok {
		t.Logf("(the big worker %s got none of the load's connections)", strconv.Quote(pid))
	}
}
