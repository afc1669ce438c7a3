package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/loadtest"
)

var (
	clientModes = []loadtest.Mode{loadtest.KeepAlive, loadtest.PerRequest}
	reAllReady  = regexp.MustCompile(`msg="all workers ready"`)
	reHello     = regexp.MustCompile(`hello: serving`)
)

// measured is one load against one setup.
type measured struct {
	setup   string
	workers int
	mode    loadtest.Mode
	clients int
	r       loadtest.Result
	cv      float64           // of requests per worker
	connCV  float64           // of connections per worker
	rss     float64           // the manager's, MB; 0 for none
	peak    float64           // the manager's most resident since it started (VmHWM), MB
	slices  []loadtest.Result // that r adds up, in order, if measured in slices
}

// load runs c clients against addr for d and measures the outcome.
func load(addr string, mode loadtest.Mode, c int, d time.Duration, workers int) (measured, error) {
	r, err := runLoad(addr, mode, c, d)
	if err != nil {
		return measured{}, err
	}
	return measured{mode: mode, clients: c, workers: workers, r: r,
		cv: fairness(r.PIDs, workers), connCV: fairness(r.ConnPIDs, workers)}, nil
}

// fairness is the coefficient of variation of the requests each of n
// workers answered (a worker that answered none counts as 0).
func fairness(pids map[string]int64, n int) float64 {
	vals := make([]float64, 0, n)
	for _, v := range pids {
		vals = append(vals, float64(v))
	}
	for len(vals) < n {
		vals = append(vals, 0)
	}
	var sum float64
	for _, v := range vals {
		sum += v
	}
	mean := sum / float64(len(vals))
	if mean == 0 {
		return 0
	}
	var sq float64
	for _, v := range vals {
		sq += (v - mean) * (v - mean)
	}
	return math.Sqrt(sq/float64(len(vals))) / mean
}

// startBaton runs `baton run` with args and waits until all its workers
// are ready.
func startBaton(s settings, name string, args ...string) (*proc, error) {
	p, err := start(s.logs, name, nil, append([]string{s.baton, "run"}, args...)...)
	if err != nil {
		return nil, err
	}
	if _, _, err := p.wait(reAllReady, 0, time.Minute); err != nil {
		p.stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}

// goSection: the Go hello worker, directly and under baton in each mode.
func goSection(s settings, rep *report) error {
	for _, workers := range []int{2, 4} {
		if err := goWorkers(s, rep, workers, 64); err != nil {
			return err
		}
	}
	return nil
}

// defaultSetup is baton run without --balance: worker.balance = "auto".
const defaultSetup = "baton default"

var goSetups = []string{"direct", defaultSetup, "baton shared", "baton reuseport", "baton round-robin"}

var reAutoChose = regexp.MustCompile(`msg="balance: auto chose (\S+)"`)

// autoChose returns the mode baton p's worker.balance = "auto" chose, from
// its log.
func autoChose(p *proc) (string, error) {
	line, _, err := p.wait(reAutoChose, 0, 5*time.Second)
	if err != nil {
		return "", err
	}
	return reAutoChose.FindStringSubmatch(line)[1], nil
}

// goWorkers measures every setup with workers hello workers, in both
// client modes. The setups are all started first; then the load goes to
// one after the other in slices of s.goSlice, round after round (every
// other round backwards), and each setup's slices add up to its result.
// On this machine a setup's req/s swings by 10-20 % from one second to
// the next whatever runs; slices a fraction of a second apart see the
// same machine, so the swings fall on all setups alike and cancel out of
// their ratios.
func goWorkers(s settings, rep *report, workers, clients int) error {
	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop(10 * time.Second)
		}
	}()
	addrs := make([]string, len(goSetups))
	managers := make([]int, len(goSetups))
	for i, setup := range goSetups {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		ps, manager, err := startGoSetup(s, setup, addr, workers)
		procs = append(procs, ps...)
		if err == nil && setup == defaultSetup {
			rep.autoChose, err = autoChose(ps[0])
		}
		if err != nil {
			return err
		}
		addrs[i], managers[i] = addr, manager
		if manager != 0 {
			rep.starts = append(rep.starts, startFootprint{workers: workers, setup: setup,
				rss: rssMB(manager), peak: statusMB(manager, "VmHWM:")})
		}
	}
	for _, mode := range clientModes {
		runs := make([]measured, len(goSetups))
		for i, setup := range goSetups {
			runs[i] = measured{setup: setup, workers: workers, mode: mode, clients: clients}
		}
		// Round -1 is not counted: it opens the workers' first
		// connections and warms their caches.
		for round := -1; round < s.rounds; round++ {
			order := make([]int, len(goSetups))
			for i := range order {
				order[i] = i
			}
			if round%2 != 0 {
				slices.Reverse(order)
			}
			for _, i := range order {
				r, err := runLoad(addrs[i], mode, clients, s.goSlice)
				if err != nil {
					return err
				}
				if round >= 0 {
					runs[i].r.Add(r)
					runs[i].slices = append(runs[i].slices, r)
				}
			}
		}
		for i := range runs {
			m := &runs[i]
			m.cv, m.connCV = fairness(m.r.PIDs, workers), fairness(m.r.ConnPIDs, workers)
			if managers[i] != 0 {
				m.rss, m.peak = rssMB(managers[i]), statusMB(managers[i], "VmHWM:")
			}
			fmt.Fprintf(os.Stderr, "bench:   %s ×%d %s: %.0f req/s, cv %.3f, connections %.3f\n", m.setup, workers, mode, m.r.RPS(), m.cv, m.connCV)
		}
		rep.goRuns = append(rep.goRuns, runs...)
	}
	return nil
}

// startFootprint is a baton's memory once all its workers are ready: what
// it holds then, and the most it held on the way (VmHWM).
type startFootprint struct {
	workers   int
	setup     string
	rss, peak float64 // MB
}

// startGoSetup starts one setup of workers hello workers on addr: the
// processes, and the pid of their manager (0 for none).
func startGoSetup(s settings, setup, addr string, workers int) ([]*proc, int, error) {
	name := fmt.Sprintf("go-%s-%d", setupFile(setup), workers)
	if setup != "direct" {
		p, err := startBaton(s, name, batonArgs(setup, workers, addr, filepath.Join(s.logs, name+".sock"), s.hello)...)
		if err != nil {
			return nil, 0, err
		}
		return []*proc{p}, p.cmd.Process.Pid, nil
	}
	var procs []*proc
	for i := range workers {
		p, err := start(s.logs, fmt.Sprintf("%s-%d", name, i), nil, s.hello, "-listen", addr)
		if err != nil {
			return procs, 0, err
		}
		procs = append(procs, p)
		if _, _, err := p.wait(reHello, 0, 30*time.Second); err != nil {
			return procs, 0, err
		}
	}
	return procs, 0, nil
}

// batonArgs are the arguments of `baton run` for setup ("baton MODE", or
// defaultSetup without --balance) with workers hello workers on addr.
func batonArgs(setup string, workers int, addr, control, hello string) []string {
	args := []string{"--workers", strconv.Itoa(workers), "--listen", "http=tcp://" + addr, "--control", control}
	if setup != defaultSetup {
		args = append(args, "--balance", setup[len("baton "):])
	}
	return append(args, "--", hello)
}

// defaultSection: how evenly the default spreads 32 keep-alive clients
// over 2 hello workers, beside shared, the default before auto.
func defaultSection(s settings, rep *report) error {
	const clients = 32
	for _, setup := range []string{defaultSetup, "baton shared"} {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		name := "fair-" + setupFile(setup)
		p, err := startBaton(s, name, batonArgs(setup, 2, addr, filepath.Join(s.logs, name+".sock"), s.hello)...)
		if err != nil {
			return err
		}
		if setup == defaultSetup {
			rep.autoChose, err = autoChose(p)
		}
		var m measured
		if err == nil {
			m, err = load(addr, loadtest.KeepAlive, clients, s.duration, 2)
		}
		p.stop(10 * time.Second)
		if err != nil {
			return fmt.Errorf("%s: %w", setup, err)
		}
		m.setup = setup
		fmt.Fprintf(os.Stderr, "bench:   %s ×2 %s: %.0f req/s, cv %.3f, connections %.3f\n", setup, m.mode, m.r.RPS(), m.cv, m.connCV)
		rep.defaultRuns = append(rep.defaultRuns, m)
	}
	return nil
}

// runLoad runs c clients against addr for d.
func runLoad(addr string, mode loadtest.Mode, c int, d time.Duration) (loadtest.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	return loadtest.Run(ctx, loadtest.Options{Addr: addr, Concurrency: c, Duration: d, Mode: mode})
}

func setupFile(setup string) string {
	b := []byte(setup)
	for i, c := range b {
		if c == ' ' {
			b[i] = '-'
		}
	}
	return string(b)
}

// manager is a way of running the Node hello server: it starts it, says
// which pid manages it, and reloads it.
type manager struct {
	name   string
	part   string // what -only selects it by
	start  func(s settings, addr string) (*proc, error)
	pid    func(s settings, p *proc) int
	reload func(s settings, p *proc) error
	stop   func(s settings, p *proc) // nil: end p (pm2: delete the app)
	rss    func(pid int) float64     // the manager's memory, MB; nil: rssMB
}

var reCluster = regexp.MustCompile(`^cluster: \d+ workers listening`)

func nodeManagers() []manager {
	serverJS := func(s settings) string { return filepath.Join(s.root, "contrib", "node", "server.js") }
	baton := func(balance string) manager {
		ctl := func(s settings) string { return filepath.Join(s.logs, "node-baton-"+balance+".sock") }
		return manager{
			name: "baton " + balance,
			part: "baton",
			start: func(s settings, addr string) (*proc, error) {
				return startBaton(s, "node-baton-"+balance, "--workers", "2", "--ready", "fd", "--balance", balance,
					"--listen", "http=tcp://"+addr, "--control", ctl(s), "--", s.node, serverJS(s))
			},
			pid: func(_ settings, p *proc) int { return p.cmd.Process.Pid },
			reload: func(s settings, _ *proc) error {
				_, err := run(nil, s.baton, "reload", "--control", ctl(s))
				return err
			},
		}
	}
	cluster := func(sched string) manager {
		return manager{
			name: "node cluster SCHED_" + map[string]string{"rr": "RR", "none": "NONE"}[sched],
			part: "cluster",
			start: func(s settings, addr string) (*proc, error) {
				_, port, _ := splitPort(addr)
				p, err := start(s.logs, "node-cluster-"+sched, []string{"SCHED=" + sched, "PORT=" + port, "WORKERS=2"},
					s.node, filepath.Join(s.root, "bench", "node", "cluster.js"))
				if err != nil {
					return nil, err
				}
				if _, _, err := p.wait(reCluster, 0, 30*time.Second); err != nil {
					return nil, err
				}
				return p, nil
			},
			pid: func(_ settings, p *proc) int { return p.cmd.Process.Pid },
			reload: func(_ settings, p *proc) error {
				from := p.len()
				syscall.Kill(p.cmd.Process.Pid, syscall.SIGHUP)
				_, _, err := p.wait(regexp.MustCompile(`^reloaded$`), from, time.Minute)
				return err
			},
		}
	}
	pm2 := manager{
		name: "pm2 cluster",
		part: "pm2",
		start: func(s settings, addr string) (*proc, error) {
			_, port, _ := splitPort(addr)
			env := []string{"PM2_HOME=" + s.pm2Home, "PORT=" + port}
			if _, err := run(env, s.pm2, "start", serverJS(s), "-i", "2", "--name", "hello"); err != nil {
				return nil, err
			}
			return nil, waitServing(addr, 30*time.Second)
		},
		pid: func(s settings, _ *proc) int {
			b, _ := os.ReadFile(filepath.Join(s.pm2Home, "pm2.pid"))
			pid, _ := strconv.Atoi(string(b))
			return pid
		},
		reload: func(s settings, _ *proc) error {
			_, err := run([]string{"PM2_HOME=" + s.pm2Home}, s.pm2, "reload", "hello")
			return err
		},
	}
	return []manager{baton("shared"), baton("round-robin"), pm2, cluster("rr"), cluster("none"),
		proxyManager("nginx"), proxyManager("haproxy")}
}

// nodeParts are the names -only selects Node managers by.
var nodeParts = []string{"baton", "pm2", "cluster", "nginx", "haproxy"}

func splitPort(addr string) (string, string, error) {
	i := len(addr) - 1
	for i >= 0 && addr[i] != ':' {
		i--
	}
	if i < 0 {
		return "", "", fmt.Errorf("no port in %q", addr)
	}
	return addr[:i], addr[i+1:], nil
}

// reloadRun is one manager's reloads under load in one client mode.
type reloadRun struct {
	manager    string
	mode       loadtest.Mode
	r          loadtest.Result
	took       []time.Duration // each reload
	at         []time.Duration // when each began, from the start of the load
	rssBefore  float64
	rssAfter   float64
	managerPID int
}

// timelineWidth is the picture's resolution.
const timelineWidth = 100 * time.Millisecond

// nodeSection: the Node hello server under each manager: throughput,
// then reloads under load.
func nodeSection(s settings, rep *report) error {
	const clients = 64
	for _, m := range nodeManagers() {
		if !s.selected(m.part) {
			continue
		}
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		p, err := m.start(s, addr)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		stop := func() {
			switch {
			case m.stop != nil:
				m.stop(s, p)
			case p != nil:
				p.stop(10 * time.Second)
			default:
				run([]string{"PM2_HOME=" + s.pm2Home}, s.pm2, "delete", "hello")
			}
		}
		pid := m.pid(s, p)
		for _, mode := range clientModes {
			got, err := load(addr, mode, clients, s.duration, 2)
			if err != nil {
				stop()
				return err
			}
			got.setup, got.rss = m.name, m.memory(pid)
			rep.nodeRuns = append(rep.nodeRuns, got)
			fmt.Fprintf(os.Stderr, "bench:   node %s %s: %.0f req/s, cv %.3f\n", m.name, mode, got.r.RPS(), got.cv)
		}
		if m.name == "node cluster SCHED_NONE" {
			stop() // its reloads are SCHED_RR's: the same code
			continue
		}
		for _, mode := range clientModes {
			rr, err := reloads(s, m, p, addr, mode)
			if err != nil {
				stop()
				return fmt.Errorf("%s: %w", m.name, err)
			}
			rr.managerPID = pid
			rep.reloadRuns = append(rep.reloadRuns, rr)
			fmt.Fprintf(os.Stderr, "bench:   node %s %s, %d reloads: %s\n", m.name, mode, len(rr.took), rr.r)
		}
		stop()
	}
	return nil
}

// reloads runs s.reloads reloads of m under 32 clients in mode.
func reloads(s settings, m manager, p *proc, addr string, mode loadtest.Mode) (reloadRun, error) {
	pid := m.pid(s, p)
	out := reloadRun{manager: m.name, mode: mode, rssBefore: m.memory(pid)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	g, err := loadtest.Start(ctx, loadtest.Options{Addr: addr, Concurrency: 32, Mode: mode, Timeline: timelineWidth})
	if err != nil {
		return out, err
	}
	defer g.Stop()
	began := time.Now()
	if err := g.WaitOK(ctx, 500); err != nil {
		return out, err
	}
	time.Sleep(500 * time.Millisecond) // a steady stretch before, in the picture
	for range s.reloads {
		t0 := time.Now()
		if err := m.reload(s, p); err != nil {
			return out, err
		}
		out.at = append(out.at, t0.Sub(began))
		out.took = append(out.took, time.Since(t0))
		// Serving again before the next one.
		if err := g.WaitOK(ctx, g.Snapshot().OK+200); err != nil {
			return out, err
		}
	}
	time.Sleep(time.Second) // the old workers' drains end in the picture
	out.r = g.Stop()
	out.rssAfter = m.memory(pid)
	return out, nil
}

// memory is the manager's resident memory in MB.
func (m manager) memory(pid int) float64 {
	if m.rss != nil {
		return m.rss(pid)
	}
	return rssMB(pid)
}

// rollingSection: a rolling reload of 8 hello workers with surge 1.
func rollingSection(s settings, rep *report) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	cfg := filepath.Join(s.logs, "rolling.toml")
	ctl := filepath.Join(s.logs, "rolling.sock")
	text := fmt.Sprintf("[[listen]]\nname = \"http\"\naddress = \"tcp://%s\"\n\n[worker]\ncommand = [%q]\ncount = 8\n\n[reload]\nsurge = 1\n\n[control]\nsocket = %q\n", addr, s.hello, ctl)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		return err
	}
	p, err := startBaton(s, "rolling", "--config", cfg)
	if err != nil {
		return err
	}
	defer p.stop(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var gs []*loadtest.Generator
	for _, mode := range clientModes {
		g, err := loadtest.Start(ctx, loadtest.Options{Addr: addr, Concurrency: 16, Mode: mode})
		if err != nil {
			return err
		}
		defer g.Stop()
		gs = append(gs, g)
	}
	for _, g := range gs {
		if err := g.WaitOK(ctx, 300); err != nil {
			return err
		}
	}
	var mu sync.Mutex
	peak, low := 0, 1<<30
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			n := len(children(p.cmd.Process.Pid))
			mu.Lock()
			peak, low = max(peak, n), min(low, n)
			mu.Unlock()
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	t0 := time.Now()
	_, rerr := run(nil, s.baton, "reload", "--control", ctl)
	took := time.Since(t0)
	close(done)
	<-sampled
	if rerr != nil {
		return rerr
	}
	rep.rolling = rollingRun{workers: 8, surge: 1, peak: peak, low: low, took: took}
	for _, g := range gs {
		rep.rolling.results = append(rep.rolling.results, g.Stop())
	}
	return nil
}

type rollingRun struct {
	workers, surge, peak, low int
	took                      time.Duration
	results                   []loadtest.Result
}

// memorySection: baton's RSS, sampled after each of many reloads.
func memorySection(s settings, rep *report) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	ctl := filepath.Join(s.logs, "memory.sock")
	p, err := startBaton(s, "memory", "--workers", "2", "--listen", "http=tcp://"+addr, "--control", ctl, "--", s.hello)
	if err != nil {
		return err
	}
	defer p.stop(10 * time.Second)
	pid := p.cmd.Process.Pid
	time.Sleep(2500 * time.Millisecond) // idle: baton has trimmed
	mem := memoryRun{reloads: s.memReloads, idleBefore: rssMB(pid)}
	// From here VmHWM is the peak of the reloads (clear_refs 5 resets it).
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset baton's peak RSS: %w", err)
	}
	for i := range s.memReloads {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		resp, err := control.Ask(ctx, ctl, control.Request{Command: "reload"})
		cancel()
		if err != nil || !resp.OK {
			return fmt.Errorf("reload %d: %+v, %v", i+1, resp, err)
		}
		rss := rssMB(pid)
		mem.samples = append(mem.samples, rss)
	}
	mem.peak = statusMB(pid, "VmHWM:")
	time.Sleep(2500 * time.Millisecond)
	mem.idleAfter = rssMB(pid)
	rep.memory = mem
	return nil
}

type memoryRun struct {
	reloads               int
	idleBefore, idleAfter float64
	samples               []float64 // after each reload
	peak                  float64   // at any moment of the reloads
}

// halves returns the largest sample of each half of the run.
func (m memoryRun) halves() (first, second float64) {
	h := len(m.samples) / 2
	if h == 0 {
		return 0, 0
	}
	return slices.Max(m.samples[:h]), slices.Max(m.samples[h:])
}
