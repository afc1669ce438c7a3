// Command bench is `make bench`: baton measured side by side with what
// operators run instead, on this machine, in one run (BENCHMARKS.md).
//
//   - the Go hello worker under baton in each balancing mode against the
//     same number of `hello -listen` processes sharing a port with
//     SO_REUSEPORT and no supervisor, all running at once and loaded in
//     turn in short slices: requests/s, p50/p99, fairness (the
//     coefficient of variation of requests, and of connections, per
//     worker), baton's RSS; and the default (no --balance) beside
//     shared under 32 keep-alive clients;
//   - one Node hello server (contrib/node/server.js, the same code for
//     all) under baton, pm2 in cluster mode and Node's cluster module
//     (SCHED_RR and SCHED_NONE), and behind nginx and HAProxy (peers.go):
//     the same figures, then failed requests by kind during 10 reloads
//     each (behind a proxy, a deployment of new servers through the
//     proxy's graceful reload), reload time, the manager's RSS;
//   - a rolling reload of 8 workers with reload.surge = 1: the peak number
//     of worker processes and the failed requests;
//   - baton's RSS over 300 reloads.
//
// It writes results.md (the tables), timeline.dat and reloads.png (the
// picture, drawn with gnuplot) into -out, and the processes' logs under
// -out/logs. -only runs some of it: a section (go, node, rolling,
// memory) or the Node managers of one kind (baton, pm2, cluster, nginx,
// haproxy), comma-separated. Loopback only; every process it starts is
// ended before it exits.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// settings of one run of the bench.
type settings struct {
	root, out, logs string // repository, results, logs
	baton, hello    string // built binaries
	node, pm2       string
	nginx, haproxy  string
	pm2Home         string
	only            []string      // the -only parts; none: all
	duration        time.Duration // of each throughput measurement of Node
	goSlice         time.Duration // of each of the Go comparison's slices of load
	rounds          int           // of the Go comparison: slices of each setup
	reloads         int           // per manager in the Node comparison
	memReloads      int           // for baton's RSS
}

func main() {
	out := flag.String("out", "bench/results", "`dir` for results.md, the picture and the logs")
	quick := flag.Bool("quick", false, "short runs: check the bench itself, not the numbers")
	only := flag.String("only", "", "run only these `parts`, comma-separated: go, default, node, rolling, memory, or the Node managers baton, pm2, cluster, nginx, haproxy")
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
		nginx: sbin("nginx"), haproxy: sbin("haproxy"),
		pm2Home:  filepath.Join(root, ".bench", "pm2"),
		duration: 5 * time.Second, goSlice: 250 * time.Millisecond, rounds: 60, reloads: 10, memReloads: 300,
	}
	if *quick {
		s.duration, s.goSlice, s.rounds, s.reloads, s.memReloads = time.Second, 100*time.Millisecond, 4, 3, 30
	}
	if *only != "" {
		s.only = strings.Split(*only, ",")
		for _, part := range s.only {
			if !slices.Contains(sectionParts, part) && !slices.Contains(nodeParts, part) {
				fatal(fmt.Errorf("-only: unknown part %q: want go, node, rolling, memory, %s", part, strings.Join(nodeParts, ", ")))
			}
		}
	}
	if err := os.MkdirAll(s.logs, 0o755); err != nil {
		fatal(err)
	}
	need := []string{s.baton, s.hello}
	for part, f := range map[string]string{"pm2": s.pm2, "nginx": s.nginx, "haproxy": s.haproxy} {
		if s.selected("node") && s.selected(part) {
			need = append(need, f)
		}
	}
	for _, f := range need {
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
		part, name string
		f          func(settings, *report) error
	}{
		{"go", "Go hello: baton's balancing modes against no supervisor", goSection},
		{"default", "Go hello: how evenly the default balances", defaultSection},
		{"node", "Node hello: baton, pm2, Node's cluster module, nginx and HAProxy", nodeSection},
		{"rolling", "rolling reload of 8 workers, surge 1", rollingSection},
		{"memory", "baton's memory over many reloads", memorySection},
	}
	for _, st := range steps {
		if !s.selected(st.part) {
			continue
		}
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

// sectionParts are the names -only selects sections by.
var sectionParts = []string{"go", "default", "node", "rolling", "memory"}

// selected says whether -only asks for part: a section, or the Node
// managers of one kind (which the node section then runs alone).
func (s settings) selected(part string) bool {
	if len(s.only) == 0 || slices.Contains(s.only, part) {
		return true
	}
	if part == "node" {
		return slices.ContainsFunc(s.only, func(p string) bool { return slices.Contains(nodeParts, p) })
	}
	return slices.Contains(nodeParts, part) && slices.Contains(s.only, "node")
}

// sbin finds a program that may be in /usr/sbin, which a user's PATH may
// not have.
func sbin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return filepath.Join("/usr/sbin", name)
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
