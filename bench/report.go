package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/batonhq/baton/loadtest"
)

// report collects what the sections measured and writes it out.
type report struct {
	settings
	began   time.Time
	took    time.Duration
	machine []string // lines describing the machine and the versions

	goRuns      []measured
	starts      []startFootprint // the Go section's batons
	autoChose   string           // the mode worker.balance = "auto" chose in defaultSetup
	defaultRuns []measured       // defaultSection's
	nodeRuns    []measured
	reloadRuns  []reloadRun
	rolling     rollingRun
	memory      memoryRun
}

func (r *report) describeMachine() {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %d GiB", (kb+512<<10)>>20)
	}
	osName := "Linux"
	if b, err := os.ReadFile("/etc/debian_version"); err == nil {
		osName = "Debian " + strings.TrimSpace(string(b))
	}
	kernel, _ := run(nil, "uname", "-r")
	version := func(argv ...string) string {
		out, err := run(nil, argv...)
		if err != nil {
			return "?"
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		return strings.TrimSpace(lines[len(lines)-1])
	}
	r.machine = []string{
		fmt.Sprintf("%s, kernel %s, %d cores (%s)%s", osName, strings.TrimSpace(kernel), runtime.NumCPU(), cpu, mem),
		fmt.Sprintf("baton %s (%s), Go %s, Node %s, pm2 %s", version(r.baton, "version"), "static build, as `make build`",
			strings.TrimPrefix(runtime.Version(), "go"), strings.TrimPrefix(version(r.node, "--version"), "v"), r.pm2Version()),
		fmt.Sprintf("%s (`nginx -v`), %s (`haproxy -v`), Debian's packages", proxyVersion(r.nginx, "-v"), proxyVersion(r.haproxy, "-v")),
		"the load generator (`loadtest`, non-retrying, loopback) runs on the same cores as the servers",
	}
}

// proxyVersion is the first line a proxy prints for flag: "nginx version:
// nginx/1.22.1" gives "nginx 1.22.1", "HAProxy version 2.6.12-1+deb12u3
// 2025/10/03 - https://haproxy.org/" gives "HAProxy 2.6.12-1+deb12u3".
func proxyVersion(bin, flag string) string {
	out, err := run(nil, bin, flag)
	if err != nil {
		return filepath.Base(bin) + " ?"
	}
	line := strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	if v, ok := strings.CutPrefix(line, "nginx version: nginx/"); ok {
		return "nginx " + v
	}
	if f := strings.Fields(line); len(f) >= 3 && f[1] == "version" {
		return f[0] + " " + f[2]
	}
	return line
}

// pm2Version reads pm2's version from its package: `pm2 --version` would
// start a daemon in the user's home.
func (r *report) pm2Version() string {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(r.pm2)), "pm2", "package.json"))
	if err != nil {
		return "?"
	}
	var pkg struct{ Version string }
	if json.Unmarshal(b, &pkg) != nil || pkg.Version == "" {
		return "?"
	}
	return pkg.Version
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// goRuns in table order: workers, then setup, then mode.
func (r *report) goRows() []measured {
	rows := slices.Clone(r.goRuns)
	slices.SortStableFunc(rows, func(a, b measured) int {
		if a.workers != b.workers {
			return a.workers - b.workers
		}
		if c := slices.Index(goSetups, a.setup) - slices.Index(goSetups, b.setup); c != 0 {
			return c
		}
		return int(a.mode) - int(b.mode)
	})
	return rows
}

// direct is the run without a supervisor that m is compared with.
func (r *report) direct(m measured) (measured, bool) { return r.goRun("direct", m) }

// goRun returns the run of setup with m's workers and clients.
func (r *report) goRun(setup string, m measured) (measured, bool) {
	for _, d := range r.goRuns {
		if d.setup == setup && d.workers == m.workers && d.mode == m.mode {
			return d, true
		}
	}
	return measured{}, false
}

// quarterRatios is m's req/s over d's in each quarter of their slices
// (slice i of each was measured in the same round): how steady the ratio
// of the whole run is.
func quarterRatios(m, d measured) []float64 {
	n := min(len(m.slices), len(d.slices))
	var out []float64
	for q := range 4 {
		var a, b loadtest.Result
		for i := q * n / 4; i < (q+1)*n/4; i++ {
			a.Add(m.slices[i])
			b.Add(d.slices[i])
		}
		if b.RPS() > 0 {
			out = append(out, a.RPS()/b.RPS())
		}
	}
	return out
}

func failedKinds(res loadtest.Result) string {
	if res.Failed() == 0 {
		return "—"
	}
	var parts []string
	for _, k := range []struct {
		name string
		n    int64
	}{{"refused", res.Refused}, {"reset", res.Reset}, {"eof", res.EOF}, {"timeout", res.Timeout}, {"status", res.BadStatus}, {"other", res.Other}} {
		if k.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", k.n, k.name))
		}
	}
	return strings.Join(parts, ", ")
}

func (r *report) markdown() string {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	command := "`make bench` (`go run ./bench`)"
	if len(r.only) > 0 {
		command = "`go run ./bench -only " + strings.Join(r.only, ",") + "`"
	}
	p("Run %s, took %s: %s.\n\n", r.began.UTC().Format("2006-01-02 15:04 MST"), r.took.Round(time.Second), command)
	for _, m := range r.machine {
		p("- %s\n", m)
	}
	if len(r.goRuns) > 0 {
		r.goTable(p)
	}
	if len(r.defaultRuns) > 0 {
		r.defaultTable(p)
	}
	if len(r.nodeRuns) > 0 {
		r.nodeTables(p)
	}
	if r.rolling.workers > 0 {
		r.rollingTable(p)
	}
	if r.memory.reloads > 0 {
		r.memoryTable(p)
	}
	if r.pictured() > 0 {
		p("\n![successful and failed requests per 100 ms through %d reloads: baton and pm2](reloads.png)\n", r.reloads)
	}
	return b.String()
}

func (r *report) goTable(p func(string, ...any)) {
	p("\n### Go hello worker: baton's balancing modes against no supervisor\n\n")
	p("64 clients. Every setup runs at once, idle but for the one under load: the load goes to one setup after the other for %s each, %d rounds (every other round backwards), and each row adds up its setup's slices (%s of load in all), so that the machine's drift falls on all setups alike. *direct*: that many `hello -listen` processes sharing the port with SO_REUSEPORT, no supervisor. *baton default*: no `--balance`, so `auto`, which chose `%s` here. *of direct*: the setup's req/s over direct's; *each quarter*: the same over each quarter of the rounds, to show how steady it is. *fairness*: coefficient of variation of the requests each worker answered (0 = perfectly even), and of the connections each was given (by the worker of each connection's first response): with keep-alive clients a worker serves its connections as fast as the CPU it gets allows, so the requests' spread is the connections' and the CPU's.\n\n",
		r.goSlice, r.rounds, time.Duration(r.rounds)*r.goSlice, r.autoChose)
	p("*of shared*: the setup's req/s over `baton shared`'s. *baton RSS MB*: resident at the end of the row's load (VmRSS), and the most resident since baton started (VmHWM: its start included).\n\n")
	p("| workers | setup | clients | req/s | of direct | each quarter | of shared | p50 ms | p99 ms | fairness CV requests | connections | failed | baton RSS MB, end / peak |\n| ---: | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, m := range r.goRows() {
		ratio, quarters, ofShared, rss := "—", "—", "—", "—"
		if d, ok := r.direct(m); ok && m.setup != "direct" && d.r.RPS() > 0 {
			ratio = fmt.Sprintf("%.2f", m.r.RPS()/d.r.RPS())
			var each []string
			for _, q := range quarterRatios(m, d) {
				each = append(each, fmt.Sprintf("%.2f", q))
			}
			quarters = strings.Join(each, ", ")
			rss = fmt.Sprintf("%.1f / %.1f", m.rss, m.peak)
		}
		if sh, ok := r.goRun("baton shared", m); ok && m.setup != "direct" && sh.r.RPS() > 0 {
			ofShared = fmt.Sprintf("%.2f", m.r.RPS()/sh.r.RPS())
		}
		p("| %d | %s | %s | %.0f | %s | %s | %s | %s | %s | %.3f | %.3f | %d | %s |\n", m.workers, m.setup, m.mode, m.r.RPS(), ratio, quarters, ofShared,
			ms(m.r.Latency.Quantile(0.5)), ms(m.r.Latency.Quantile(0.99)), m.cv, m.connCV, m.r.Failed(), rss)
	}
	p("\n#### baton's memory at start\n\nEach Go setup's baton once all its workers are ready: resident (VmRSS), and the most resident on the way (VmHWM).\n\n")
	p("| workers | setup | RSS MB | peak MB |\n| ---: | --- | ---: | ---: |\n")
	for _, st := range r.starts {
		p("| %d | %s | %.1f | %.1f |\n", st.workers, st.setup, st.rss, st.peak)
	}
}

func (r *report) defaultTable(p func(string, ...any)) {
	p("\n### The default balancing: 2 hello workers, 32 keep-alive clients\n\n")
	p("baton without `--balance` (`auto`, which chose `%s` here) and with `shared`, the default before `auto`, %s each, one after the other. *fairness* as above.\n\n", r.autoChose, r.duration)
	p("| setup | req/s | p50 ms | p99 ms | fairness CV requests | connections | failed |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, m := range r.defaultRuns {
		p("| %s | %.0f | %s | %s | %.3f | %.3f | %d |\n", m.setup, m.r.RPS(), ms(m.r.Latency.Quantile(0.5)), ms(m.r.Latency.Quantile(0.99)), m.cv, m.connCV, m.r.Failed())
	}
}

func (r *report) nodeTables(p func(string, ...any)) {
	p("\n### Node hello server (contrib/node/server.js, the same code under each)\n\n")
	p("2 workers, 64 clients, %s per row. *nginx*, *HAProxy*: the proxy (configuration in bench/peers/, otherwise their defaults) in front of %d Node servers on ports of their own, spreading requests round-robin over keep-alive connections to them. Manager RSS: baton; pm2's daemon; the cluster's primary; the proxy's master and workers added up (pages they share counted for each).\n\n", r.duration, proxyBackends)
	p("| manager | clients | req/s | p50 ms | p99 ms | fairness CV requests | connections | failed | manager RSS MB |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, m := range r.nodeRuns {
		p("| %s | %s | %.0f | %s | %s | %.3f | %.3f | %d | %.1f |\n", m.setup, m.mode, m.r.RPS(), ms(m.r.Latency.Quantile(0.5)), ms(m.r.Latency.Quantile(0.99)), m.cv, m.connCV, m.r.Failed(), m.rss)
	}
	p("\n### Node hello server: %d reloads under 32 clients\n\n", r.reloads)
	p("`baton reload`; `pm2 reload hello`; for the cluster module, a rolling restart by its primary (new worker first, then SIGTERM to the old one). Behind nginx and HAProxy a reload is a blue/green deployment through the proxy's graceful reload: start %d new Node servers on new ports, write the proxy's configuration for them, reload the proxy (`nginx -e stderr -p DIR/ -c DIR/nginx.conf -s reload`; `kill -USR2` to HAProxy's master, as Debian's haproxy.service does), and once the proxy's old workers have exited, SIGTERM the old servers. Reload time: from the command to its answer (the cluster: to its primary's \"reloaded\"; nginx and HAProxy: from starting the new servers to the proxy's old workers gone).\n\n", proxyBackends)
	p("| manager | clients | requests | failed | by kind | reload time p50 / max s | manager RSS MB before → after |\n| --- | --- | ---: | ---: | --- | ---: | ---: |\n")
	for _, rr := range r.reloadRuns {
		took := slices.Clone(rr.took)
		slices.Sort(took)
		p50, top := time.Duration(0), time.Duration(0)
		if len(took) > 0 {
			p50, top = took[len(took)/2], took[len(took)-1]
		}
		p("| %s | %s | %d | %d | %s | %.2f / %.2f | %.1f → %.1f |\n", rr.manager, rr.mode, rr.r.Requests, rr.r.Failed(), failedKinds(rr.r),
			p50.Seconds(), top.Seconds(), rr.rssBefore, rr.rssAfter)
	}
}

func (r *report) rollingTable(p func(string, ...any)) {
	ro := r.rolling
	p("\n### Rolling reload: %d hello workers, reload.surge = %d\n\n", ro.workers, ro.surge)
	p("16 clients in each mode at once; worker processes counted every 2 ms during `baton reload`.\n\n")
	p("| worker processes (peak) | (lowest) | reload took s |")
	for _, res := range ro.results {
		p(" %s requests / failed |", res.Mode)
	}
	p("\n| ---: | ---: | ---: |%s\n", strings.Repeat(" ---: |", len(ro.results)))
	p("| %d | %d | %.2f |", ro.peak, ro.low, ro.took.Seconds())
	for _, res := range ro.results {
		p(" %d / %d |", res.Requests, res.Failed())
	}
	p("\n")
}

func (r *report) memoryTable(p func(string, ...any)) {
	mem := r.memory
	first, second := mem.halves()
	p("\n### baton's memory over %d reloads\n\n", mem.reloads)
	p("2 hello workers, one `baton reload` after another (each answered once the new generation is ready); RSS (VmRSS) read after each. *peak*: the most resident at any moment of the reloads (VmHWM, reset once idle before them).\n\n")
	p("| idle before MB | largest, first half MB | largest, second half MB | peak MB | idle after MB |\n| ---: | ---: | ---: | ---: | ---: |\n")
	p("| %.1f | %.1f | %.1f | %.1f | %.1f |\n", mem.idleBefore, first, second, mem.peak, mem.idleAfter)
}

// pictured counts the reload runs the picture draws.
func (r *report) pictured() int {
	n := 0
	for _, rr := range r.reloadRuns {
		if slices.Contains(pictured, rr.manager) {
			n++
		}
	}
	return n
}

// write writes results.md, the timeline data and the picture.
func (r *report) write() error {
	if err := os.WriteFile(filepath.Join(r.out, "results.md"), []byte(r.markdown()), 0o644); err != nil {
		return err
	}
	os.Stdout.WriteString(r.markdown())
	return r.plot()
}

// pictured are the reload runs drawn, in panel order.
var pictured = []string{"baton shared", "pm2 cluster"}

// plot writes timeline.dat (one block per manager and client mode: time,
// ok, failed per 100 ms) and draws reloads.png with gnuplot.
func (r *report) plot() error {
	if r.pictured() == 0 {
		return nil
	}
	var data bytes.Buffer
	var panels []string
	index := 0
	for _, mode := range clientModes {
		for _, name := range pictured {
			for _, rr := range r.reloadRuns {
				if rr.manager != name || rr.mode != mode {
					continue
				}
				fmt.Fprintf(&data, "# %s, %s\n", name, mode)
				for i, bk := range rr.r.Timeline {
					fmt.Fprintf(&data, "%.1f %d %d\n", float64(i)*timelineWidth.Seconds(), bk.OK, bk.Failed)
				}
				data.WriteString("\n\n")
				title := fmt.Sprintf("%s, %s: %d failed of %d", name, mode, rr.r.Failed(), rr.r.Requests)
				var marks strings.Builder
				for _, at := range rr.at {
					fmt.Fprintf(&marks, "set arrow from %.2f, graph 0 to %.2f, graph 1 nohead lc rgb '#bbbbbb' dt 2\n", at.Seconds(), at.Seconds())
				}
				panels = append(panels, fmt.Sprintf("unset arrow\n%sset title %q\nplot 'timeline.dat' index %d using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index %d using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'\n",
					marks.String(), title, index, index))
				index++
			}
		}
	}
	if err := os.WriteFile(filepath.Join(r.out, "timeline.dat"), data.Bytes(), 0o644); err != nil {
		return err
	}
	script := fmt.Sprintf(`set terminal pngcairo size 1400,900 font ",10"
set output 'reloads.png'
set multiplot layout 2,2 title "Node hello server, 2 workers, 32 clients, %d reloads (dashed: each reload begins)"
set xlabel 'seconds'
set ylabel 'ok per 100 ms'
set y2label 'failed per 100 ms'
set y2range [0:*]
set yrange [0:*]
set ytics nomirror
set y2tics
set key top left
%sunset multiplot
`, r.reloads, strings.Join(panels, ""))
	if err := os.WriteFile(filepath.Join(r.out, "reloads.gp"), []byte(script), 0o644); err != nil {
		return err
	}
	cmd := exec.Command("gnuplot", "reloads.gp")
	cmd.Dir = r.out
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %w: %s", err, out)
	}
	return nil
}
