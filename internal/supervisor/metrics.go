package supervisor

import (
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/connbudget"
	"github.com/batonhq/baton/internal/lifecycle"
)

// The metrics listener (control.metrics) answers over HTTP:
//
//	/metrics  Prometheus' text format: baton's state from the Machine's
//	          snapshot, and the Go and process collectors
//	/livez    200 while baton's event loop answers (never its workers: a
//	          liveness probe must not restart a service whose workers
//	          are merely busy)
//	/readyz   200 while a generation whose workers are all ready serves,
//	          also during a reload; 503 before and from the moment a stop
//	          begins
//
// Like the control socket it is passed to a self-upgraded successor,
// which answers on it once in charge.

// Bounds on the metrics listener, which any client that can reach its
// address may use (docs/metrics.md).
const (
	// MetricsConns is how many connections are served at once;
	// internal/connbudget makes room among them for a client that asks
	// something.
	MetricsConns = 64
	// maxScrapes is how many scrapes run at once: one whose client reads
	// the answer slowly holds its connection until the write timeout.
	maxScrapes = 8
	// LivezTimeout is how long /livez, and a scrape, wait for the event
	// loop.
	LivezTimeout = 2 * time.Second
	// snapshotTTL is how long scrapes share the state read from the loop.
	snapshotTTL = 250 * time.Millisecond
)

type metricsServer struct {
	addr    string
	ln      *net.TCPListener
	passKey string // its name for the upgrader, "" if not registered
	once    sync.Once
	srv     *http.Server

	// The last snapshot read from the loop, shared by the requests of
	// the next snapshotTTL; ok: the loop answered.
	mu   sync.Mutex
	at   time.Time
	snap lifecycle.Snapshot
	ok   bool

	ping sharedPing // /livez's no-op on the loop
}

// sharedPing is the no-op /livez has queued on the loop and that has not
// run yet: a probe that comes meanwhile waits for it rather than queue
// another.
type sharedPing struct {
	mu  sync.Mutex
	cur *loopPing
}

// loopPing is one no-op on the loop, shared by the probes that wait for it.
type loopPing struct {
	done chan struct{}
	ok   bool
}

// join returns the no-op to wait for, and whether the caller is to queue
// it (none was pending).
func (sp *sharedPing) join() (*loopPing, bool) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.cur != nil {
		return sp.cur, false
	}
	sp.cur = &loopPing{done: make(chan struct{})}
	return sp.cur, true
}

// ran marks p as run (or given up on): whoever comes next needs a new one.
func (sp *sharedPing) ran(p *loopPing) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.cur == p {
		sp.cur = nil
	}
}

// snapshot returns the Machine's state as of at most snapshotTTL ago, and
// whether the event loop answered then.
func (s *supervisor) snapshot() (lifecycle.Snapshot, bool) {
	m := s.metrics
	m.mu.Lock()
	defer m.mu.Unlock()
	if time.Since(m.at) < snapshotTTL {
		return m.snap, m.ok
	}
	var snap lifecycle.Snapshot
	ok := s.inLoop(func() { snap = s.m.Snapshot() }, LivezTimeout)
	m.at, m.snap, m.ok = time.Now(), snap, ok
	return snap, ok
}

// loopAnswers reports whether the event loop runs a no-op within
// LivezTimeout. A caller that comes while a no-op is queued and has not
// run waits for that one: it runs after the caller asked, which is what a
// probe needs to know, and a flood of probes costs the loop one no-op at
// a time.
func (s *supervisor) loopAnswers() bool {
	sp := &s.metrics.ping
	p, queue := sp.join()
	if !queue {
		<-p.done
		return p.ok
	}
	p.ok = s.inLoop(func() { sp.ran(p) }, LivezTimeout)
	sp.ran(p)
	close(p.done)
	return p.ok
}

// atMost serves at most n requests of h at once; one more gets 503 at
// once.
func atMost(n int, h http.Handler) http.Handler {
	sem := make(chan struct{}, n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
			h.ServeHTTP(w, r)
		default:
			http.Error(w, fmt.Sprintf("%d requests of %s are under way: try again", n, r.URL.Path), http.StatusServiceUnavailable)
		}
	})
}

// openMetrics returns the metrics listener at addr: the one the parent
// passed when it is at the same address, else a new one, registered with
// the upgrader.
func (s *supervisor) openMetrics(addr string, note *upgradeNote) (*metricsServer, error) {
	p := passedSocket{what: "metrics listener " + addr, at: addr, prefix: "metrics",
		listen: func() (net.Listener, error) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return nil, fmt.Errorf("supervisor: metrics listener: %w", err)
			}
			return ln, nil
		},
		unlisten: func(ln net.Listener) { ln.Close() },
	}
	if note != nil && note.Metrics == addr {
		p.passed = note.MetricsKey
	}
	ln, key, err := s.openPassed(p)
	if err != nil {
		return nil, err
	}
	return &metricsServer{addr: addr, ln: ln.(*net.TCPListener), passKey: key}, nil
}

// serveMetrics starts answering on the metrics listener, if any.
func (s *supervisor) serveMetrics() {
	m := s.metrics
	if m == nil {
		return
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &machineCollector{s: s})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", atMost(maxScrapes, promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})))
	// /livez asks the loop itself (a no-op it runs); /readyz reads what
	// the loop stored after its last event: fresh, and no work for it.
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		if !s.loopAnswers() {
			http.Error(w, "baton's event loop does not answer", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready: no generation serves, or baton is stopping", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second,
		IdleTimeout: 5 * time.Second, MaxHeaderBytes: 8 << 10}
	srv, ln := m.srv, connbudget.New(m.ln, MetricsConns)
	s.goTask(func() { ln.Serve(srv) })
}

// close stops answering; the socket stays open in the upgrader (and in a
// successor) if they hold it.
func (m *metricsServer) close() {
	if m == nil {
		return
	}
	m.once.Do(func() {
		if m.srv != nil {
			m.srv.Close()
		}
		m.ln.Close()
	})
}

// machineCollector reads the Machine's snapshot (through the loop) at
// each scrape.
type machineCollector struct{ s *supervisor }

var (
	descWorkers    = prometheus.NewDesc("baton_workers", "Live worker processes by state.", []string{"state"}, nil)
	descRestarts   = prometheus.NewDesc("baton_restarts_total", "Worker replacements by reason (crash, stopping, watchdog, memory, stuck: the restart budget's; operator: baton restart).", []string{"reason"}, nil)
	descGiveUps    = prometheus.NewDesc("baton_giveups_total", "Times the restart budget ran out.", nil, nil)
	descReloads    = prometheus.NewDesc("baton_reloads_total", "Reloads by result (ok, failed, rolled_back).", []string{"result"}, nil)
	descUpgrades   = prometheus.NewDesc("baton_upgrades_total", "Self-upgrades by result (ok: the one this baton took over; failed).", []string{"result"}, nil)
	descReloadTime = prometheus.NewDesc("baton_reload_duration_seconds", "How long reloads took, from the request to the outcome.", nil, nil)
	descGeneration = prometheus.NewDesc("baton_generation", "The serving generation (0 before the first is ready).", nil, nil)
	descDraining   = prometheus.NewDesc("baton_draining_generations", "Generations draining.", nil, nil)
	descBudget     = prometheus.NewDesc("baton_restart_budget_remaining", "Unplanned restarts left in the restart window.", nil, nil)
	descReady      = prometheus.NewDesc("baton_ready", "1 while a ready generation serves and no stop has begun.", nil, nil)
	descDropped    = prometheus.NewDesc("baton_notify_dropped_total", "Notify datagrams dropped: not from a worker, or malformed.", nil, nil)
	descRefused    = prometheus.NewDesc("baton_control_refused_total", "Control connections refused: neither root nor baton's user.", nil, nil)
	descOutput     = prometheus.NewDesc("baton_output_dropped_total", "Output lines dropped because baton's standard error was not read fast enough, or its reader had gone.", nil, nil)
	descMemory     = prometheus.NewDesc("baton_worker_resident_memory_bytes", "Resident memory of the serving worker of each slot.", []string{"slot"}, nil)
	descBalance    = prometheus.NewDesc("baton_balance_info", "How connections reach the workers: 1 for the mode in force, and what worker.balance says (auto, or the mode).", []string{"mode", "configured"}, nil)
	descPassed     = prometheus.NewDesc("baton_connections_passed_total", "Connections baton accepted and passed to a worker (worker.balance = \"round-robin\"), by listener.", []string{"listener"}, nil)
	descReclaimed  = prometheus.NewDesc("baton_connections_reclaimed_total", "Connections a stuck worker left unread on its channel, taken back and passed to another worker (worker.balance = \"round-robin\"), by listener.", []string{"listener"}, nil)
	descCPU        = prometheus.NewDesc("baton_worker_cpu_seconds_total", "User and system CPU time of the serving worker of each slot.", []string{"slot"}, nil)
	descBuildInfo  = prometheus.NewDesc("baton_build_info", "1, labelled with baton's version and the Go version it was built with.", []string{"version", "goversion"}, nil)
	descDesired    = prometheus.NewDesc("baton_workers_desired", "How many workers the pool is kept at: worker.count, or what baton scale set.", nil, nil)
	descReloadOK   = prometheus.NewDesc("baton_last_reload_successful", "1 if the last reload or self-upgrade succeeded, or none happened yet; 0 if it failed.", nil, nil)
	descReloadAt   = prometheus.NewDesc("baton_last_reload_timestamp_seconds", "When the last reload or self-upgrade ended, whatever its outcome; before any, when baton started.", nil, nil)
	descSlotRests  = prometheus.NewDesc("baton_worker_restarts_total", "Unplanned restarts of each slot of the pool.", []string{"slot"}, nil)
	descStarted    = prometheus.NewDesc("baton_worker_start_time_seconds", "When the serving worker of each slot started, in seconds since the epoch.", []string{"slot"}, nil)
)

// Describe sends nothing: the collector is unchecked (its slots come and
// go with the pool).
func (c *machineCollector) Describe(chan<- *prometheus.Desc) {}

func (c *machineCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	snap, ok := s.snapshot()
	if !ok {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	states := map[string]int{"starting": 0, "ready": 0, "draining": 0, "stuck": 0, "stopping": 0}
	for _, p := range snap.Procs {
		states[p.State]++
	}
	for state, n := range states {
		gauge(descWorkers, float64(n), state)
	}
	for _, reason := range []string{"crash", "stopping", "watchdog", "memory", "stuck", "operator"} {
		counter(descRestarts, float64(snap.Counts.Restarts[reason]), reason)
	}
	counter(descGiveUps, float64(snap.Counts.GiveUps))
	for _, result := range []string{"ok", "failed", "rolled_back"} {
		counter(descReloads, float64(snap.Counts.Reloads[result]), result)
	}
	for _, result := range []string{"ok", "failed"} {
		counter(descUpgrades, float64(snap.Counts.Upgrades[result]), result)
	}
	buckets := map[float64]uint64{}
	for i, b := range lifecycle.ReloadBuckets {
		buckets[b] = uint64(snap.Counts.ReloadSeconds[i])
	}
	ch <- prometheus.MustNewConstHistogram(descReloadTime, uint64(snap.Counts.ReloadSeconds[len(lifecycle.ReloadBuckets)]),
		snap.Counts.ReloadSum.Seconds(), buckets)
	gauge(descGeneration, float64(snap.Generation))
	gauge(descDraining, float64(snap.Draining))
	gauge(descBudget, float64(budgetRemaining(snap)))
	ready := 0.0
	if snap.Ready {
		ready = 1
	}
	gauge(descReady, ready)
	gauge(descBuildInfo, 1, s.version, runtime.Version())
	gauge(descDesired, float64(snap.Desired))
	reloadOK, reloadAt := 1.0, s.started
	if at := snap.LastReload.At; !at.IsZero() {
		reloadAt = at
		if snap.LastReload.Err != nil {
			reloadOK = 0
		}
	}
	gauge(descReloadOK, reloadOK)
	gauge(descReloadAt, unixSeconds(reloadAt))
	// Slots scaled away have no series: they are bounded by the pool.
	for slot, n := range snap.SlotRestarts {
		counter(descSlotRests, float64(n), strconv.Itoa(slot))
	}
	// What is counted outside the Machine is read without the loop.
	counter(descDropped, float64(int64(snap.NotifyDrops)+s.fromWorkers.Malformed()))
	counter(descRefused, float64(s.control.Refused()))
	counter(descOutput, float64(s.outputDropped()))
	configured := s.balance
	if s.auto != "" {
		configured = config.BalanceAuto
	}
	gauge(descBalance, 1, s.balance, configured)
	if s.rr != nil {
		reclaimed := s.rr.Reclaimed() // of listeners that passed some
		for name, n := range s.rr.Passed() {
			counter(descPassed, float64(n), name)
			counter(descReclaimed, float64(reclaimed[name]), name)
		}
	}
	// The serving worker of each slot: the newest one not leaving. /proc
	// is read here, not in the loop.
	serving := map[int]lifecycle.Proc{}
	for _, p := range snap.Procs {
		if p.State == "draining" || p.State == "stuck" || p.State == "stopping" {
			continue
		}
		if cur, ok := serving[p.Slot]; !ok || p.Generation > cur.Generation {
			serving[p.Slot] = p
		}
	}
	for slot, p := range serving {
		gauge(descMemory, float64(processRSS(p.PID)), strconv.Itoa(slot))
		counter(descCPU, processCPU(p.PID), strconv.Itoa(slot))
		gauge(descStarted, unixSeconds(p.Started), strconv.Itoa(slot))
	}
}

// budgetRemaining is how many unplanned restarts are left: none once
// baton gave up, until a reload brings a full pool back, however many
// the window would allow.
func budgetRemaining(snap lifecycle.Snapshot) int {
	if snap.Budget.Spent {
		return 0
	}
	return max(snap.Budget.Limit-snap.Budget.Used, 0)
}

// unixSeconds is t in seconds since the epoch, as Prometheus' timestamps
// are.
func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
