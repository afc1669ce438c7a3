package supervisor

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/lifecycle"
	"github.com/batonhq/baton/internal/spawn"
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

// loopCall runs do on the loop's goroutine, the one that owns the
// Machine.
type loopCall struct{ do func() }

// inLoop runs f on the loop and waits for it, at most timeout; false if
// the loop did not get to it (stopped, or hung).
func (s *supervisor) inLoop(f func(), timeout time.Duration) bool {
	done := make(chan struct{})
	select {
	case s.events <- loopCall{do: func() { f(); close(done) }}:
	case <-s.quit:
		return false
	case <-time.After(timeout):
		return false
	}
	select {
	case <-done:
		return true
	case <-s.quit:
		return false
	case <-time.After(timeout):
		return false
	}
}

// Bounds on the metrics listener, which any client that can reach its
// address may use: connections served at once (more wait in the kernel's
// queue, costing baton nothing), and how often a scrape or probe may ask
// the event loop for the state (the answers in between share it).
const (
	loopTimeout     = 2 * time.Second
	maxMetricsConns = 64
	snapshotTTL     = 250 * time.Millisecond
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
	ok := s.inLoop(func() { snap = s.m.Snapshot() }, loopTimeout)
	m.at, m.snap, m.ok = time.Now(), snap, ok
	return snap, ok
}

// limitListener serves at most cap(sem) connections at once: Accept waits
// for one to close.
type limitListener struct {
	net.Listener
	sem    chan struct{}
	closed chan struct{}
	once   sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// openMetrics returns the metrics listener at addr: the one the parent
// passed when it is at the same address, else a new one, registered with
// the upgrader.
func (s *supervisor) openMetrics(addr string, note *upgradeNote) (*metricsServer, error) {
	m := &metricsServer{addr: addr}
	if note != nil && note.Metrics == addr && note.MetricsKey != "" {
		fd, err := s.upg.Take(note.MetricsKey)
		if err == nil && fd < 0 {
			err = errors.New("the previous baton did not pass it")
		}
		if err != nil {
			return nil, fmt.Errorf("supervisor: metrics listener %s: %w", addr, err)
		}
		f := os.NewFile(uintptr(fd), addr)
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("supervisor: metrics listener %s from the previous baton: %w", addr, err)
		}
		m.ln, m.passKey = ln.(*net.TCPListener), note.MetricsKey
		return m, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("supervisor: metrics listener: %w", err)
	}
	m.ln = ln.(*net.TCPListener)
	if s.upg != nil {
		m.passKey = "metrics-" + strconv.Itoa(os.Getpid())
		fd, err := spawn.DupFd(m.ln)
		if err == nil {
			err = s.upg.Add(m.passKey, fd)
			unix.Close(fd)
		}
		if err != nil {
			m.ln.Close()
			return nil, fmt.Errorf("supervisor: metrics listener: %w", err)
		}
	}
	return m, nil
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
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	// /livez asks the loop itself (a no-op it runs); /readyz reads what
	// the loop stored after its last event: fresh, and no work for it.
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		if !s.inLoop(func() {}, loopTimeout) {
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
	srv := m.srv
	ln := &limitListener{Listener: m.ln, sem: make(chan struct{}, maxMetricsConns), closed: make(chan struct{})}
	s.goTask(func() { srv.Serve(ln) })
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
	descBalance    = prometheus.NewDesc("baton_balance_info", "How connections reach the workers (worker.balance): 1 for the mode in force.", []string{"mode"}, nil)
	descPassed     = prometheus.NewDesc("baton_connections_passed_total", "Connections baton accepted and passed to a worker (worker.balance = \"round-robin\"), by listener.", []string{"listener"}, nil)
	descReclaimed  = prometheus.NewDesc("baton_connections_reclaimed_total", "Connections a stuck worker left unread on its channel, taken back and passed to another worker (worker.balance = \"round-robin\"), by listener.", []string{"listener"}, nil)
	descCPU        = prometheus.NewDesc("baton_worker_cpu_seconds_total", "User and system CPU time of the serving worker of each slot.", []string{"slot"}, nil)
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
	gauge(descBudget, float64(max(snap.Budget.Limit-snap.Budget.Used, 0)))
	ready := 0.0
	if snap.Ready {
		ready = 1
	}
	gauge(descReady, ready)
	// What is counted outside the Machine is read without the loop.
	counter(descDropped, float64(int64(snap.NotifyDrops)+s.fromWorkers.Malformed()))
	counter(descRefused, float64(s.control.refused.Load()))
	counter(descOutput, float64(s.outputDropped()))
	gauge(descBalance, 1, s.balance)
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
	}
}
