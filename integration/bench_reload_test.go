package integration

import (
	"math"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/loadtest"
)

// reloadsPerRun is how many reloads one iteration of BenchmarkReload makes.
const reloadsPerRun = 50

var (
	reReloadEnd = regexp.MustCompile(`msg="reload (done|failed)[^"]*"`)
	reReloadGen = regexp.MustCompile(` generation=(\d+)`)
)

// BenchmarkReload measures reloads of 4 hello workers under load (32
// clients, for the whole run), 50 SIGHUPs one after another, each sent
// once the previous one's old generation is gone. For each it times the
// signal → "reload done" (the new generation serves) and signal → "generation
// N drained" for the generation that served when the signal was sent (the
// reload's whole cost), and reports their p50 and p99 in ms, the failed
// requests (must be 0) and the load's req/s. Run with -benchtime 1x
// (make bench).
func BenchmarkReload(b *testing.B) {
	for _, mode := range modes {
		b.Run(mode.String(), func(b *testing.B) {
			bt := startBaton(b, "--workers", "4", "--", bin.hello)
			line := bt.out.wait(reAllReady, time.Second)
			gen := atoiMatch(b, reReloadGen, line)
			g := startBenchLoad(b, bt.addr, mode)
			pid := bt.cmd.Process.Pid
			from := bt.out.len()

			var ready, drained []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for range reloadsPerRun {
					old := gen
					reDrained := regexp.MustCompile(`msg="generation ` + strconv.Itoa(old) + ` drained"`)
					start := time.Now()
					if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
						b.Fatal(err)
					}
					end, next := bt.out.waitFrom(from, reReloadEnd, time.Minute)
					ready = append(ready, time.Since(start))
					if reReloadEnd.FindStringSubmatch(end)[1] != "done" {
						b.Fatalf("reload %d failed: %s", len(ready), end)
					}
					if gen = atoiMatch(b, reReloadGen, end); gen <= old {
						b.Fatalf("reload done at generation %d, was %d: %s", gen, old, end)
					}
					_, n := bt.out.waitFrom(from, reDrained, time.Minute)
					drained = append(drained, time.Since(start))
					from = max(next, n)
				}
			}
			b.StopTimer()
			r := g.Stop()
			b.Logf("%d reloads: %s", len(drained), r)
			b.Logf("signal → new generation ready: p50 %v p99 %v max %v", nearestRank(ready, 50), nearestRank(ready, 99), slices.Max(ready))
			b.Logf("signal → old generation drained: p50 %v p99 %v max %v", nearestRank(drained, 50), nearestRank(drained, 99), slices.Max(drained))
			if r.Failed() != 0 {
				b.Errorf("%d requests failed during %d reloads: %s %v", r.Failed(), len(drained), r, r.Samples)
			}
			if len(r.PIDs) <= 4 {
				b.Errorf("answers came from %d worker pids across %d reloads, want new generations among them", len(r.PIDs), len(drained))
			}
			b.ReportMetric(millis(nearestRank(drained, 50)), "drained-p50-ms")
			b.ReportMetric(millis(nearestRank(drained, 99)), "drained-p99-ms")
			b.ReportMetric(millis(nearestRank(ready, 50)), "ready-p50-ms")
			b.ReportMetric(millis(nearestRank(ready, 99)), "ready-p99-ms")
			b.ReportMetric(float64(r.Requests), "requests")
			b.ReportMetric(float64(r.Failed()), "failed")
			b.ReportMetric(r.RPS(), "req/s")
		})
	}
}

// startBenchLoad starts a load that lasts the whole benchmark (bounded)
// and waits until it flows.
func startBenchLoad(b *testing.B, addr string, mode loadtest.Mode) *loadtest.Generator {
	b.Helper()
	ctx := withTimeout(b, 20*time.Minute)
	g, err := loadtest.Start(ctx, loadtest.Options{Addr: addr, Concurrency: 32, Mode: mode, Duration: 15 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { g.Stop() })
	if err := g.WaitOK(ctx, 200); err != nil {
		b.Fatalf("load never flowed: %v (%s)", err, g.Snapshot())
	}
	return g
}

// nearestRank returns the p-th percentile of ds by the nearest-rank method
// (with 50 samples, p99 is the slowest).
func nearestRank(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// atoiMatch returns re's first group in s as a number.
func atoiMatch(tb testing.TB, re *regexp.Regexp, s string) int {
	tb.Helper()
	m := re.FindStringSubmatch(s)
	if m == nil {
		tb.Fatalf("no %q in %q", re, s)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		tb.Fatal(err)
	}
	return n
}
