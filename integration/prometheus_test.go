package integration

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// promtool returns the path of Prometheus' promtool, which make deps
// installs (Debian package prometheus): its absence is a setup to fix, not
// a reason to skip.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed (Debian package prometheus): run make deps: %v", err)
	}
	return p
}

// runPromtool runs promtool with args in dir, stdin from in, and fails the
// test unless it exits 0.
func runPromtool(t *testing.T, dir, in string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir, cmd.Stdin = dir, strings.NewReader(in)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

var reMetricName = regexp.MustCompile(`baton_[a-z_]+`)

// documented fails the test for each baton metric named in text that
// docs/metrics.md does not list.
func documented(t *testing.T, what, text string) {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range reMetricName.FindAllString(text, -1) {
		if base := strings.TrimSuffix(name, "_bucket"); !strings.Contains(string(doc), "`"+base) {
			t.Errorf("%s names %s, which docs/metrics.md does not list", what, name)
		}
	}
}

// The alert rules pass promtool's check and their own unit tests, and
// name only documented metrics; the dashboard's queries parse as
// Prometheus parses them.
func TestPromRules(t *testing.T) {
	dir := filepath.Join(repoRoot, "contrib", "prometheus")
	runPromtool(t, dir, "", "check", "rules", "alerts.yml")
	runPromtool(t, dir, "", "test", "rules", "alerts_test.yml")
	rules, err := os.ReadFile(filepath.Join(dir, "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	documented(t, "contrib/prometheus/alerts.yml", string(rules))

	// Each query as a recording rule, Grafana's variable filled in.
	var sb strings.Builder
	sb.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for _, p := range dashboardPanels(t) {
		for _, tg := range p.Targets {
			expr := strings.ReplaceAll(tg.Expr, "$instance", ".*")
			fmt.Fprintf(&sb, "      - record: dashboard:q%d\n        expr: %q\n", n, expr)
			n++
		}
	}
	f := filepath.Join(t.TempDir(), "dashboard.yml")
	if err := os.WriteFile(f, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := runPromtool(t, "", "", "check", "rules", f); !strings.Contains(out, fmt.Sprintf("%d rules found", n)) {
		t.Errorf("promtool checked the dashboard's %d queries: %s", n, out)
	}
}

// slotsOf returns the slot labels of family name's series, sorted.
func slotsOf(mf map[string]*dto.MetricFamily, name string) []string {
	var slots []string
	if f := mf[name]; f != nil {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == "slot" {
					slots = append(slots, l.GetValue())
				}
			}
		}
	}
	slices.Sort(slots)
	return slots
}

// A live /metrics passes promtool check metrics (no lint either) and
// documents itself; the metrics an alert uses follow what happens: the
// build, the desired count through a scale up and down (the slots scaled
// away lose their series), the last reload through a failed one and a
// good one, a slot's restarts and its worker's start time through a
// crash, and the budget once baton gave up.
func TestPromMetrics(t *testing.T) {
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	// One unplanned restart allowed: the second crash gives up, and the
	// survivors serve.
	cfg := func(addr string) string {
		return batonConfig(addr, 2, nil, "") + fmt.Sprintf("\n[restart]\nlimit = 1\nwindow = \"1h\"\nbackoff_min = \"10ms\"\non_giveup = \"degrade\"\n\n[control]\nmetrics = \"127.0.0.1:%d\"\n", port)
	}
	began := time.Now()
	b := startConfigBaton(t, cfg)
	body := func() string {
		code, body := httpGet(base + "/metrics")
		if code != 200 {
			t.Fatalf("GET /metrics: %d %s", code, body)
		}
		return body
	}
	type want struct {
		name, label, value string
		want               float64
	}
	// settled scrapes until every want holds (scrapes share what they
	// read from baton for a moment), at most 5 s, and fails for those that
	// do not; it returns the last scrape.
	settled := func(when string, wants ...want) map[string]*dto.MetricFamily {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			mf, wrong := scrape(t, base), []string{}
			for _, w := range wants {
				if got := value(mf, w.name, w.label, w.value); got != w.want {
					wrong = append(wrong, fmt.Sprintf("%s{%s=%q} = %v, want %v", w.name, w.label, w.value, got, w.want))
				}
			}
			if len(wrong) == 0 {
				return mf
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: %s", when, strings.Join(wrong, "; "))
				return mf
			}
		}
	}
	// within checks that a timestamp metric is between from and to, a
	// second of slack for the clocks' rounding.
	within := func(when string, mf map[string]*dto.MetricFamily, name, slot string, from, to time.Time) float64 {
		t.Helper()
		label := ""
		if slot != "" {
			label = "slot"
		}
		got := value(mf, name, label, slot)
		if got < float64(from.Unix()-1) || got > float64(to.Unix()+1) {
			t.Errorf("%s: %s{slot=%q} = %v, want between %d and %d", when, name, slot, got, from.Unix(), to.Unix())
		}
		return got
	}

	text := body()
	runPromtool(t, "", text, "check", "metrics")
	documented(t, "/metrics", strings.Join(regexp.MustCompile(`(?m)^# TYPE (baton_\w+)`).FindAllString(text, -1), "\n"))
	mf := settled("at start",
		want{"baton_build_info", "", "", 1},
		want{"baton_workers_desired", "", "", 2},
		want{"baton_last_reload_successful", "", "", 1},
		want{"baton_worker_restarts_total", "slot", "0", 0},
		want{"baton_worker_restarts_total", "slot", "1", 0})
	started := time.Now()
	if got, want := buildInfo(mf), map[string]string{"version": batonVersion(t), "goversion": runtime.Version()}; !maps.Equal(got, want) {
		t.Errorf("baton_build_info's labels: %v, want %v", got, want)
	}
	within("at start", mf, "baton_last_reload_timestamp_seconds", "", began, started)
	within("at start", mf, "baton_worker_start_time_seconds", "1", began, started)

	// A scale up adds the slots' series, a scale down removes them.
	if code, out := ctl(t, "scale", "--control", b.control, "4"); code != 0 {
		t.Fatalf("scale 4: exit %d: %s", code, out)
	}
	mf = settled("scaled to 4", want{"baton_workers_desired", "", "", 4}, want{"baton_worker_restarts_total", "slot", "3", 0})
	within("scaled to 4", mf, "baton_worker_start_time_seconds", "3", started, time.Now())
	if code, out := ctl(t, "scale", "--control", b.control, "2"); code != 0 {
		t.Fatalf("scale 2: exit %d: %s", code, out)
	}
	mf = settled("scaled to 2", want{"baton_workers_desired", "", "", 2})
	for _, name := range []string{"baton_worker_restarts_total", "baton_worker_start_time_seconds", "baton_worker_resident_memory_bytes", "baton_worker_cpu_seconds_total"} {
		if got := slotsOf(mf, name); !slices.Equal(got, []string{"0", "1"}) {
			t.Errorf("scaled back to 2: %s has slots %v, want [0 1]", name, got)
		}
	}

	// A reload that fails, then one that succeeds.
	b.write(t, "[worker\n")
	beforeReload := time.Now()
	if code, out := b.reloadCmd(t); code == 0 {
		t.Fatalf("reload of a broken config: exit 0: %s", out)
	}
	mf = settled("after a failed reload", want{"baton_last_reload_successful", "", "", 0}, want{"baton_reloads_total", "result", "failed", 1})
	failedAt := within("after a failed reload", mf, "baton_last_reload_timestamp_seconds", "", beforeReload, time.Now())
	runPromtool(t, "", body(), "check", "metrics")
	b.write(t, cfg(b.addr))
	if code, out := b.reloadCmd(t); code != 0 {
		t.Fatalf("reload: exit %d: %s", code, out)
	}
	mf = settled("after a good reload", want{"baton_last_reload_successful", "", "", 1})
	if at := value(mf, "baton_last_reload_timestamp_seconds", "", ""); at < failedAt {
		t.Errorf("after a good reload: baton_last_reload_timestamp_seconds = %v, before the failed one's %v", at, failedAt)
	}

	// A crash: its slot's restarts count it, its worker starts anew.
	pids := b.workerPIDs()
	from := b.out.len()
	killed := time.Now()
	syscall.Kill(pids[0], syscall.SIGKILL)
	b.out.waitFrom(from, regexp.MustCompile(`msg="worker ready" slot=0 `), 30*time.Second)
	mf = settled("after a crash",
		want{"baton_worker_restarts_total", "slot", "0", 1},
		want{"baton_worker_restarts_total", "slot", "1", 0},
		want{"baton_restarts_total", "reason", "crash", 1},
		want{"baton_restart_budget_remaining", "", "", 0},
		want{"baton_workers_desired", "", "", 2})
	within("after a crash", mf, "baton_worker_start_time_seconds", "0", killed, time.Now())

	// A second crash spends what is not there: baton gives up on slot 1
	// and serves with slot 0, two wanted and one ready.
	from = b.out.len()
	syscall.Kill(pids[1], syscall.SIGKILL)
	b.out.waitFrom(from, regexp.MustCompile(`msg="giving up on restarts"`), 30*time.Second)
	mf = settled("after giving up",
		want{"baton_giveups_total", "", "", 1},
		want{"baton_restart_budget_remaining", "", "", 0},
		want{"baton_workers_desired", "", "", 2},
		want{"baton_workers", "state", "ready", 1},
		want{"baton_worker_restarts_total", "slot", "1", 0})
	if got := slotsOf(mf, "baton_worker_start_time_seconds"); !slices.Equal(got, []string{"0"}) {
		t.Errorf("after giving up on slot 1: baton_worker_start_time_seconds has slots %v, want [0]", got)
	}
	runPromtool(t, "", body(), "check", "metrics")
}

// buildInfo returns the labels of baton_build_info.
func buildInfo(mf map[string]*dto.MetricFamily) map[string]string {
	labels := map[string]string{}
	if f := mf["baton_build_info"]; f != nil && len(f.Metric) == 1 {
		for _, l := range f.Metric[0].Label {
			labels[l.GetName()] = l.GetValue()
		}
	}
	return labels
}

// batonVersion is the version the suite's baton says it is.
func batonVersion(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(bin.baton, "version").Output()
	if err != nil {
		t.Fatalf("baton version: %v", err)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "baton ")
}
