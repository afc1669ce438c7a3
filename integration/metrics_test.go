package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/batonhq/baton/internal/supervisor"
	"github.com/batonhq/baton/loadtest"
)

// get returns the status code and body of a GET, 0 when nothing answers.
func httpGet(url string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// readyzAfterStop asks /readyz once baton logged its stop: the answer is
// taken once the loop is through the stop's step, which it logs first, so
// within a second; 200 all that second is the failure.
func readyzAfterStop(base string) (int, string) {
	code, body := httpGet(base + "/readyz")
	for deadline := time.Now().Add(time.Second); code == 200 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		code, body = httpGet(base + "/readyz")
	}
	return code, body
}

// scrape parses baton's /metrics as Prometheus does.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpGet(base + "/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return mf
}

// value returns the value of family name's metric with the label, or -1.
func value(mf map[string]*dto.MetricFamily, name, label, want string) float64 {
	f := mf[name]
	if f == nil {
		return -1
	}
	for _, m := range f.Metric {
		ok := label == ""
		for _, l := range m.Label {
			ok = ok || l.GetName() == label && l.GetValue() == want
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// /readyz is 503 before the first generation is ready, 200 while it
// serves and throughout 10 reloads, 503 once a stop begins; /livez is 200
// all along. A scrape counts what happened: 10 reloads ok, 1 rolled
// back, 3 crashes, and shows the pool after a scale.
func TestMetricsAndHealth(t *testing.T) {
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg := func(command []string) func(addr string) string {
		return func(addr string) string {
			return batonConfig(addr, 2, command, `ready = "delay:1s"`) + fmt.Sprintf("\n[control]\nmetrics = \"127.0.0.1:%d\"\n", port)
		}
	}
	b := newConfigBaton(t, cfg(nil))
	// The listener is there before the workers are ready.
	var first int
	for deadline := time.Now().Add(10 * time.Second); first == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		first, _ = httpGet(base + "/readyz")
	}
	if first != 503 {
		t.Errorf("/readyz before the first generation is ready: %d, want 503", first)
	}
	b.out.wait(reAllReady, 30*time.Second)
	// The line is logged within the event that makes baton ready, and
	// /readyz reads the outcome of the whole event: a moment later (with
	// reuseport, once the steering program points at the workers).
	code, body := httpGet(base + "/readyz")
	for deadline := time.Now().Add(5 * time.Second); code != 200 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		code, body = httpGet(base + "/readyz")
	}
	if code != 200 {
		t.Errorf("/readyz once serving: %d %s", code, body)
	}

	// Probes all along the reloads.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			for _, probe := range []string{"/readyz", "/livez"} {
				if code, body := httpGet(base + probe); code != 200 {
					bad = append(bad, fmt.Sprintf("%s %d %s", probe, code, body))
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	for i := range 10 {
		if code, out := b.reloadCmd(t); code != 0 {
			t.Fatalf("reload %d: exit %d: %s", i+1, code, out)
		}
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d probes failed during 10 reloads, first: %s", len(bad), bad[0])
	}

	b.write(t, cfg([]string{"false"})(b.addr))
	if code, out := b.reloadCmd(t); code != 1 || !strings.Contains(out, "rolled back") {
		t.Fatalf("reload to a failing worker: exit %d: %s", code, out)
	}
	b.write(t, cfg(nil)(b.addr))
	for range 3 {
		pids := b.workerPIDs()
		from := b.out.len()
		syscall.Kill(pids[0], syscall.SIGKILL)
		b.out.waitFrom(from, reWorkerReady, 30*time.Second)
	}
	if code, out := ctl(t, "scale", "--control", b.control, "3"); code != 0 {
		t.Fatalf("scale 3: exit %d: %s", code, out)
	}

	mf := scrape(t, base)
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"baton_reloads_total", "result", "ok", 10},
		{"baton_reloads_total", "result", "rolled_back", 1},
		{"baton_reloads_total", "result", "failed", 0},
		{"baton_restarts_total", "reason", "crash", 3},
		{"baton_restarts_total", "reason", "watchdog", 0},
		{"baton_workers", "state", "ready", 3},
		{"baton_workers", "state", "starting", 0},
		{"baton_reload_duration_seconds", "", "", 11},
		{"baton_generation", "", "", 11},
		{"baton_ready", "", "", 1},
		{"baton_restart_budget_remaining", "", "", 7},
		{"baton_worker_resident_memory_bytes", "slot", "2", -2}, // present
		{"go_goroutines", "", "", -2},
		{"process_open_fds", "", "", -2},
	} {
		got := value(mf, c.name, c.label, c.value)
		if c.want == -2 && got > 0 || got == c.want {
			continue
		}
		t.Errorf("%s{%s=%q} = %v, want %v", c.name, c.label, c.value, got, c.want)
	}

	// A stop: /readyz says so at once, while the workers drain (these
	// ignore SIGTERM: the stop lasts until a second signal).
	b.write(t, cfg([]string{"sh", "-c", `trap "" TERM; exec sleep 600`})(b.addr))
	if code, out := b.reloadCmd(t); code != 0 {
		t.Fatalf("reload to workers that ignore SIGTERM: exit %d: %s", code, out)
	}
	from := b.out.len()
	syscall.Kill(b.cmd.Process.Pid, syscall.SIGTERM)
	b.out.waitFrom(from, regexp.MustCompile(`msg=stopping`), 10*time.Second)
	if code, body := readyzAfterStop(base); code != 503 || !strings.Contains(body, "stopping") {
		t.Errorf("/readyz once stopping: %d %s, want 503", code, body)
	}
	if code, _ := httpGet(base + "/livez"); code != 200 {
		t.Errorf("/livez while stopping: %d, want 200", code)
	}
	syscall.Kill(b.cmd.Process.Pid, syscall.SIGTERM) // the second one kills
	if code := b.waitExit(30 * time.Second); code != 0 {
		t.Errorf("baton exited %d", code)
	}
}

// baton as PID 1 of a PID namespace (as in a container), under load: on
// SIGTERM /readyz says 503 at once while a stream still drains, the
// workers drain, baton exits 0 and nothing of the namespace is left.
func TestPID1UnderLoad(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare is not installed (Debian package util-linux): ", err)
	}
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, nil, unshare, "--pid", "--fork", "--mount-proc", "--kill-child",
		bin.baton, "run", "--listen", "http=tcp://"+addr, "--workers", "2", "--metrics", fmt.Sprintf("127.0.0.1:%d", port), "--", bin.hello)
	p.out.wait(reAllReady, 30*time.Second)
	var baton int
	for _, pid := range p.descendants() {
		if comm(pid) == "baton" && nsPid(pid) == 1 {
			baton = pid
		}
	}
	if baton == 0 {
		t.Fatal("no baton with pid 1 under unshare")
	}
	tree := append(p.descendants(), baton)
	g := startLoad(t, addr, loadtest.PerRequest, 16)
	waitServed(t, g, 300)
	if code, _ := httpGet(base + "/readyz"); code != 200 {
		t.Fatalf("/readyz while serving: %d", code)
	}
	// A stream that lasts 2s keeps a worker draining after the stop.
	resp, err := http.Get("http://" + addr + "/stream?s=2")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatalf("the stream's first line: %v", err)
	}
	if before := g.Snapshot(); before.Failed() != 0 {
		t.Errorf("before the stop: %s %v", before, before.Samples)
	}
	from := p.out.len()
	syscall.Kill(baton, syscall.SIGTERM)
	p.out.waitFrom(from, regexp.MustCompile(`msg=stopping`), 10*time.Second)
	if code, body := readyzAfterStop(base); code != 503 {
		t.Errorf("/readyz once stopping: %d %s, want 503", code, body)
	}
	rest, err := io.ReadAll(br)
	if err != nil || strings.Count(string(rest), "\n") < 10 {
		t.Errorf("the stream in flight at the stop: %v after %d more lines, want it to finish", err, strings.Count(string(rest), "\n"))
	}
	// From the stop on, new connections are refused: the service is going.
	t.Logf("load, until baton exited: %s", g.Stop())
	if code := p.waitExit(30 * time.Second); code != 0 {
		t.Errorf("unshare (baton as PID 1) exited %d, want 0", code)
	}
	for _, pid := range tree {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil && ppid(pid) != 0 {
			t.Errorf("pid %d (%s) of the namespace is still there", pid, comm(pid))
		}
	}
}

// Whoever reaches the metrics address cannot take baton's descriptors:
// 300 connections that start a request and stall cost it at most the 64
// it serves at once, a probe still answers at once (it takes the place of
// one of them), and once they are gone baton holds what it held before.
func TestMetricsListenerIsBounded(t *testing.T) {
	port := freePort(t)
	b := startBaton(t, "--workers", "1", "--metrics", fmt.Sprintf("127.0.0.1:%d", port), "--", bin.hello)
	pid := b.cmd.Process.Pid
	before := openFDs(t, pid)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 300 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /metrics HTTP/1.1\r\n")
		conns = append(conns, c)
	}
	// Let baton accept what it will: the fd count settles at its bound.
	most := 0
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		most = max(most, openFDs(t, pid))
	}
	if most > before+supervisor.MetricsConns+4 {
		t.Errorf("with 300 stalled metrics connections baton held %d descriptors, %d before; want at most %d more", most, before, supervisor.MetricsConns)
	}
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/livez", port))
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("/livez with 300 stalled connections: %v %v", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	now := 0
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if now = openFDs(t, pid); now <= before || time.Now().After(deadline) {
			break
		}
	}
	if now > before {
		t.Errorf("baton holds %d descriptors once the connections closed, %d before", now, before)
	}
}

// idleFloodEnv set to an address makes the test binary a helper process
// of TestProbesAnswerUnderIdleFlood: 500 clients that each connect to it,
// send idleFloodFirstEnv (nothing, or the start of a request) and connect
// again as soon as the other end closes, the attack of someone who can
// reach the metrics port and wants the probes to fail. It prints how many
// connections it made every 50 ms, and runs until it is ended. A process
// of its own: the probes measure baton, not the test's scheduler.
const (
	idleFloodEnv      = "BATON_IT_IDLE_FLOOD"
	idleFloodFirstEnv = "BATON_IT_IDLE_FLOOD_FIRST"
)

func idleFlood(addr string) int {
	first := os.Getenv(idleFloodFirstEnv)
	var connects atomic.Int64
	for range 500 {
		go func() {
			for {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				connects.Add(1)
				io.WriteString(c, first)
				io.Copy(io.Discard, c) // until baton closes it
				c.Close()
			}
		}()
	}
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		fmt.Printf("connects %d\n", connects.Load())
	}
	return 0
}

var reConnects = regexp.MustCompile(`^connects (\d+)$`)

// floodConnects returns how many connections the flood made, as it last
// said.
func floodConnects(p *proc) int {
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	for i := len(p.out.lines) - 1; i >= 0; i-- {
		if m := reConnects.FindStringSubmatch(p.out.lines[i]); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	return 0
}

// The probes answer whatever the metrics clients do: while 500 clients
// reconnect as fast as baton closes them, every /livez probe answers (a
// kubelet's new connection per probe) and baton holds no more descriptors
// than its connection budget. Silent clients cost a probe little (the
// kernel holds them back): 100 of 100 answer within 200 ms. Clients that
// send the start of a request, and then nothing, reach baton at once and
// are turned away one by one, the probe queued among them: 30 of 30
// answer within 1 s, Kubernetes' default probe timeout. baton is built
// without the race detector, whose cost per connection would be what the
// bounds measure.
func TestProbesAnswerUnderIdleFlood(t *testing.T) {
	for _, tt := range []struct {
		name, first string
		probes      int
		within      time.Duration
	}{
		{"silent", "", 100, 200 * time.Millisecond},
		{"stalled", "GET /metrics HTTP/1.1\r\n", 30, time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			b := start(t, nil, batonPlain(t), "run", "--listen", fmt.Sprintf("http=tcp://127.0.0.1:%d", freePort(t)), "--workers", "1", "--metrics", addr, "--", bin.hello)
			b.out.wait(reAllReady, 30*time.Second)
			pid := b.cmd.Process.Pid
			before := openFDs(t, pid)
			f := start(t, []string{idleFloodEnv + "=" + addr, idleFloodFirstEnv + "=" + tt.first}, os.Args[0])
			// Every client connected once before the first probe.
			for deadline := time.Now().Add(10 * time.Second); floodConnects(f) < 500; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the flood made %d connections in 10 s, want 500", floodConnects(f))
				}
			}
			before0 := floodConnects(f)
			c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			var slow []string
			most, longest := 0, time.Duration(0)
			probeStart := time.Now()
			probes := 0
			for ; probes < tt.probes && len(slow) < 10; probes++ {
				t0 := time.Now()
				resp, err := c.Get("http://" + addr + "/livez")
				took := time.Since(t0)
				longest = max(longest, took)
				switch {
				case err != nil:
					slow = append(slow, fmt.Sprintf("probe %d: %v after %v", probes, err, took.Round(time.Millisecond)))
				case resp.StatusCode != 200 || took > tt.within:
					slow = append(slow, fmt.Sprintf("probe %d: %d after %v", probes, resp.StatusCode, took.Round(time.Millisecond)))
				}
				if resp != nil {
					resp.Body.Close()
				}
				most = max(most, openFDs(t, pid))
				time.Sleep(20 * time.Millisecond) // a probe period, scaled down
			}
			cut := floodConnects(f) - before0
			t.Logf("%d probes in %v, the slowest %v; %d flood connections were cut meanwhile; baton held at most %d descriptors (%d before)",
				probes, time.Since(probeStart).Round(time.Millisecond), longest.Round(time.Millisecond), cut, most, before)
			if len(slow) > 0 {
				t.Errorf("%d probes failed or took over %v under 500 reconnecting clients (stopped at 10), first: %s", len(slow), tt.within, slow[0])
			}
			if cut < 500 {
				t.Errorf("only %d flood connections were cut while probing: the flood did not reach baton", cut)
			}
			if most > before+supervisor.MetricsConns+4 {
				t.Errorf("baton held %d descriptors under the flood, %d before; want at most %d more", most, before, supervisor.MetricsConns)
			}
		})
	}
}
