// Command bench is `make bench`: baton measured side by side with what
// operators run instead, on this machine, in one run (BENCHMARKS.md).
//
//   - the Go hello worker under baton in each balancing mode against the
//     same number of `hello -listen` processes sharing a port with
//     SO_REUSEPORT and no supervisor, all running at once and loaded in
//     turn in short slices: requests/s, p50/p99, fairness (the
//     coefficient of variation of requests, and of connections, per
//     worker), baton's RSS;
//   - one Node hello server (contrib/node/server.js, the same code for
//     all) under baton, pm2 in cluster mode and Node's cluster module
//     (SCHED_RR and SCHED_NONE): the same figures, then failed requests
//     by kind during 10 reloads each, reload time, the manager's RSS;
//   - a rolling reload of 8 workers with reload.surge = 1: the peak number
//     of worker processes and the failed requests;
//   - baton's RSS over 300 reloads.
//
// It writes results.md (the tables), timeline.dat and reloads.png (the
// picture, drawn with gnuplot) into -out, and the processes' logs under
// -out/logs. Loopback only; every process it starts is ended before it
// exits.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// settings of one run of the bench.
type settings struct {
	root, out, logs string // repository, results, logs
	baton, hello    string // built binaries
	node, pm2       string
	pm2Home         string
	duration        time.Duration // of each throughput measurement of Node
	goSlice         time.Duration // of each of the Go comparison's slices of load
	rounds          int           // of the Go comparison: slices of each setup
	reloads         int           // per manager in the Node comparison
	memReloads      int           // for baton's RSS
}

func main() {
	out := flag.String("out", "bench/results", "`dir` for results.md, the picture and the logs")
	quick := flag.Bool("quick", false, "short runs: check the bench itself, not the numbers")
	flag.Parse()
	root, err := os.Getwd()
	if err != nil {
		fatal(err)
	}
	if *out, err = filepath.Abs(*out); err != nil {
		fatal(err)
	}
	s := settings{
		root: root, out: *out, logs: filepath.Join(*out, "logs"),
		baton: filepath.Join(root, "bin", "baton"), hello: filepath.Join(root, "bin", "hello"),
		node: "node", pm2: filepath.Join(root, ".bench", "node_modules", ".bin", "pm2"),
		pm2Home:  filepath.Join(root, ".bench", "pm2"),
		duration: 5 * time.Second, goSlice: 250 * time.Millisecond, rounds: 60, reloads: 10, memReloads: 300,
	}
	if *quick {
		s.duration, s.goSlice, s.rounds, s.reloads, s.memReloads = time.Second, 100*time.Millisecond, 4, 3, 30
	}
	if err := os.MkdirAll(s.logs, 0o755); err != nil {
		fatal(err)
	}
	for _, f := range []string{s.baton, s.hello, s.pm2} {
		if _, err := os.Stat(f); err != nil {
			fatal(fmt.Errorf("%s is missing: run `make bench`, which builds and installs it", f))
		}
	}
	// Whatever happens, nothing started here outlives the bench.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		cleanup(s)
		os.Exit(130)
	}()
	defer cleanup(s)

	began := time.Now()
	rep := &report{settings: s, began: began}
	rep.describeMachine()
	steps := []struct {
		name string
		f    func(settings, *report) error
	}{
		{"Go hello: baton's balancing modes against no supervisor", goSection},
		{"Node hello: baton, pm2 and Node's cluster module", nodeSection},
		{"rolling reload of 8 workers, surge 1", rollingSection},
		{"baton's memory over many reloads", memorySection},
	}
	for _, st := range steps {
		fmt.Fprintf(os.Stderr, "bench: %s (%s in)\n", st.name, time.Since(began).Round(time.Second))
		if err := st.f(s, rep); err != nil {
			cleanup(s)
			fatal(fmt.Errorf("%s: %w", st.name, err))
		}
	}
	rep.took = time.Since(began)
	if err := rep.write(); err != nil {
		fatal(err)
	}
	fmt.Fprintf(os.Stderr, "bench: done in %s: %s\n", rep.took.Round(time.Second), filepath.Join(s.out, "results.md"))
}

// cleanup ends every process the bench started, pm2's daemon included.
func cleanup(s settings) {
	stopAll()
	if _, err := os.Stat(filepath.Join(s.pm2Home, "pm2.pid")); err == nil {
		run([]string{"PM2_HOME=" + s.pm2Home}, s.pm2, "kill")
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
