package integration

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/loadtest"
)

// benchDuration is how long each throughput measurement runs.
const benchDuration = 5 * time.Second

// BenchmarkServe measures requests per second of the hello worker, 2
// copies, with 32 clients in each mode: under baton (workers accept on
// baton's shared socket) and without a supervisor (2 hello -listen with
// SO_REUSEPORT). It reports rps, failures and, under baton, baton's own
// resident memory. Run with -benchtime 1x (make bench).
func BenchmarkServe(b *testing.B) {
	for _, mode := range modes {
		b.Run("baton/"+mode.String(), func(b *testing.B) {
			bt := startBaton(b, "--workers", "2", "--", bin.hello)
			addr := bt.addr
			for i := 0; i < b.N; i++ {
				r := benchLoad(b, addr, mode)
				b.ReportMetric(r.RPS(), "req/s")
				b.ReportMetric(float64(r.Failed()), "failed")
			}
			b.ReportMetric(float64(rssKB(bt.cmd.Process.Pid))/1024, "baton-RSS-MB")
		})
		b.Run("no-supervisor/"+mode.String(), func(b *testing.B) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
			for i := 0; i < 2; i++ {
				p := start(b, nil, bin.hello, "-listen", addr)
				p.out.wait(regexp.MustCompile(`hello: serving`), 30*time.Second)
			}
			for i := 0; i < b.N; i++ {
				r := benchLoad(b, addr, mode)
				b.ReportMetric(r.RPS(), "req/s")
				b.ReportMetric(float64(r.Failed()), "failed")
			}
		})
	}
}

func benchLoad(b *testing.B, addr string, mode loadtest.Mode) loadtest.Result {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b.ResetTimer()
	r, err := loadtest.Run(ctx, loadtest.Options{Addr: addr, Concurrency: 32, Duration: benchDuration, Mode: mode})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%s", r)
	return r
}

func rssKB(pid int) int {
	s, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for _, line := range strings.Split(string(s), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	return 0
}
