package integration

import (
	"slices"
	"strconv"
	"testing"
	"time"
)

// upgradesPerRun is how many self-upgrades one iteration of
// BenchmarkUpgrade makes.
const upgradesPerRun = 20

// BenchmarkUpgrade measures self-upgrades of a baton with 2 hello workers
// under load (32 clients, for the whole run): 20 `baton upgrade` one after
// another, each once the previous old baton has exited. For each it times
// the command (start → "upgrade ok": the new baton serves) and start → the
// old baton's exit (its workers drained), and reports their p50 and p99
// in ms, the failed requests (must be 0), the load's req/s, and the last
// baton's RSS and open descriptors, which must not exceed those of the
// baton after the second upgrade (a leak per upgrade would show). Run with
// -benchtime 1x (make bench).
func BenchmarkUpgrade(b *testing.B) {
	for _, mode := range modes {
		b.Run(mode.String(), func(b *testing.B) {
			u := startUpgradable(b, hellosUpTo("10s"))
			first := u.settle(b)
			g := startBenchLoad(b, u.addr, mode)
			var took, gone []time.Duration
			var firstUp batonState
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for range upgradesPerRun {
					before := u.settle(b)
					start := time.Now()
					code, out := u.ctl(b, "upgrade")
					m := reUpgradeOK.FindStringSubmatch(out)
					if code != 0 || m == nil {
						b.Fatalf("upgrade %d: exit %d, %q", len(took)+1, code, out)
					}
					took = append(took, time.Since(start))
					pid, _ := strconv.Atoi(m[1])
					u.follow(pid)
					if how := u.exitOf(before.PID, time.Minute); how != "exit status 0" {
						b.Fatalf("upgrade %d: the old baton %d ended with %s", len(took), before.PID, how)
					}
					gone = append(gone, time.Since(start))
					if len(took) == 2 {
						// It holds the upgrader's copies of what passes
						// to a successor (the sockets and, under
						// reuseport, the default's choice here, the
						// group's dealer), which the first baton
						// registered only when its upgrade started. The
						// first successor holds two fewer than every
						// later one (measured: 34 descriptors after the
						// first upgrade, 36 after each of the 19 others):
						// the baton after the second upgrade is the one
						// to compare with.
						firstUp = u.settle(b)
					}
				}
			}
			b.StopTimer()
			last := u.settle(b)
			r := g.Stop()
			b.Logf("%d self-upgrades: %s", len(took), r)
			b.Logf("baton upgrade → new baton serves: p50 %v p99 %v max %v", nearestRank(took, 50), nearestRank(took, 99), slices.Max(took))
			b.Logf("baton upgrade → old baton exited: p50 %v p99 %v max %v", nearestRank(gone, 50), nearestRank(gone, 99), slices.Max(gone))
			b.Logf("baton: first pid %d fds %d rss %d kB; after two upgrades pid %d fds %d rss %d kB; last pid %d fds %d rss %d kB",
				first.PID, first.FDs, first.RSSKB, firstUp.PID, firstUp.FDs, firstUp.RSSKB, last.PID, last.FDs, last.RSSKB)
			if r.Failed() != 0 {
				b.Errorf("%d requests failed during %d self-upgrades: %s %v", r.Failed(), len(took), r, r.Samples)
			}
			if last.FDs > firstUp.FDs {
				b.Errorf("the baton after %d self-upgrades has %d descriptors open, the one after the second had %d", len(took), last.FDs, firstUp.FDs)
			}
			b.ReportMetric(millis(nearestRank(took, 50)), "upgraded-p50-ms")
			b.ReportMetric(millis(nearestRank(took, 99)), "upgraded-p99-ms")
			b.ReportMetric(millis(nearestRank(gone, 50)), "old-gone-p50-ms")
			b.ReportMetric(millis(nearestRank(gone, 99)), "old-gone-p99-ms")
			b.ReportMetric(float64(r.Requests), "requests")
			b.ReportMetric(float64(r.Failed()), "failed")
			b.ReportMetric(r.RPS(), "req/s")
			b.ReportMetric(float64(last.RSSKB), "rss-kB")
			b.ReportMetric(float64(last.FDs), "fds")
		})
	}
}
