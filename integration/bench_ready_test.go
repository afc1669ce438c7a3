package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var reWorkerReadyAt = regexp.MustCompile(`^time=(\S+) level=INFO msg="worker ready" slot=\d+ pid=(\d+) `)

// BenchmarkReadyFD measures how soon baton counts a worker with
// worker.ready = "fd" ready once it wrote its line, for two kinds of
// worker that note the time of their write: a shell script
// (`printf '\n' >&"$BATON_READY_FD"`) and the Node module's example app
// (contrib/node/server.js, with a preloaded script that stamps the
// module's write). 2 workers, 20 reloads, each write matched with baton's
// "worker ready" line for that pid (baton's log has millisecond times).
// Reports p50, p99 and the largest in ms (issue 13's target: within 100
// ms). Run with -benchtime 1x (make bench-go).
func BenchmarkReadyFD(b *testing.B) {
	b.Run("shell", func(b *testing.B) {
		dir := b.TempDir()
		script := `date +%s%N > "` + dir + `/$$"; printf '\n' >&"$BATON_READY_FD"; exec sleep 600`
		measureReadyFD(b, dir, []string{"sh", "-c", script})
	})
	b.Run("node", func(b *testing.B) {
		node, err := exec.LookPath("node")
		if err != nil {
			b.Skipf("node is not installed: %v", err)
		}
		dir := b.TempDir()
		// Stamps the time of the write to BATON_READY_FD into dir/<pid>.
		stamp := filepath.Join(dir, "stamp.js")
		js := `const fs = require('node:fs'); const fd = Number(process.env.BATON_READY_FD); const write = fs.writeSync;
fs.writeSync = function (f, ...rest) {
  if (f === fd) fs.writeFileSync(` + strconv.Quote(dir) + ` + '/' + process.pid, String(BigInt(Date.now()) * 1000000n));
  return write.call(this, f, ...rest);
};
`
		if err := os.WriteFile(stamp, []byte(js), 0o600); err != nil {
			b.Fatal(err)
		}
		measureReadyFD(b, dir, []string{node, "--require", stamp, filepath.Join(repoRoot, "contrib/node/server.js")})
	})
}

// measureReadyFD runs BenchmarkReadyFD for workers started as command,
// which write the time of their readiness write (ns since the epoch) to
// dir/<pid>.
func measureReadyFD(b *testing.B, dir string, command []string) {
	bt := startConfigBaton(b, func(addr string) string {
		return batonConfig(addr, 2, command, `ready = "fd"`)
	})
	pid := bt.cmd.Process.Pid
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for range 20 {
			from := bt.out.len()
			if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
				b.Fatal(err)
			}
			if end, _ := bt.out.waitFrom(from, reReloadEnd, time.Minute); !strings.Contains(end, "reload done") {
				b.Fatalf("reload failed: %s", end)
			}
		}
	}
	b.StopTimer()
	var lag []time.Duration
	for _, line := range strings.Split(bt.out.String(), "\n") {
		m := reWorkerReadyAt.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			b.Fatalf("log time %q: %v", m[1], err)
		}
		raw, err := os.ReadFile(filepath.Join(dir, m[2]))
		if err != nil {
			continue // a worker of the first generation, or one that did not write
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		if err != nil {
			b.Fatalf("write time of pid %s: %q", m[2], raw)
		}
		// The log has milliseconds: round the write time down the same way.
		wrote := time.Unix(0, ns).Truncate(time.Millisecond)
		lag = append(lag, at.Sub(wrote))
	}
	if len(lag) < 40 {
		b.Fatalf("%d workers matched, want at least 40 (20 reloads of 2)", len(lag))
	}
	b.Logf("line written → worker ready, %d workers: p50 %v p99 %v max %v", len(lag), nearestRank(lag, 50), nearestRank(lag, 99), slices.Max(lag))
	b.ReportMetric(millis(nearestRank(lag, 50)), "ready-p50-ms")
	b.ReportMetric(millis(nearestRank(lag, 99)), "ready-p99-ms")
	b.ReportMetric(millis(slices.Max(lag)), "ready-max-ms")
}
