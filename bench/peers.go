package main

import (
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"
)

// The proxies' configurations, filled in for each deployment.
//
//go:embed peers/nginx.conf peers/haproxy.cfg
var peerConfigs embed.FS

// proxyBackends is how many Node servers each deployment behind a proxy
// runs: as many as baton's, pm2's and the cluster's workers.
const proxyBackends = 2

var reNodeServing = regexp.MustCompile(`^node: serving on port`)

// proxy is nginx or HAProxy in front of Node hello servers, as an operator
// runs it instead of baton: the servers listen on ports of their own and
// the proxy spreads the clients' requests over them. Its reload is a
// blue/green deployment: start the new servers, point the proxy's
// configuration at them, reload the proxy gracefully, and once its old
// workers are gone, stop the old servers. That is the least a deployment
// through a proxy does, and it changes the same thing as `baton reload`
// (new processes of the application serve afterwards).
type proxy struct {
	kind   string // "nginx" or "haproxy"
	bin    string
	dir    string // its configuration, pid file, sockets and temporary files
	addr   string
	tmpl   *template.Template
	master *proc

	backends []*proc        // the current deployment's servers
	servers  []string       // their addresses
	gen      int            // deployments so far
	retiring sync.WaitGroup // stopping the servers of deployments before
}

// proxyConfig is what the templates in bench/peers/ are filled with.
type proxyConfig struct {
	Dir     string
	Listen  string
	Servers []string
}

// proxyManager is a Node manager whose reload is a deployment through kind.
func proxyManager(kind string) manager {
	var px *proxy
	return manager{
		name: map[string]string{"nginx": "nginx", "haproxy": "HAProxy"}[kind],
		part: kind,
		start: func(s settings, addr string) (*proc, error) {
			var err error
			px, err = startProxy(s, kind, addr)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", kind, err)
			}
			return px.master, nil
		},
		pid:    func(_ settings, p *proc) int { return p.cmd.Process.Pid },
		reload: func(s settings, _ *proc) error { return px.deploy(s) },
		stop:   func(settings, *proc) { px.stop() },
		rss:    treeRSS,
	}
}

// startProxy starts the first deployment's servers, then the proxy in
// front of them on addr, and waits until it answers.
func startProxy(s settings, kind, addr string) (*proxy, error) {
	px, err := newProxy(s, kind, addr)
	if err != nil {
		return nil, err
	}
	if px.backends, px.servers, err = px.startBackends(s); err != nil {
		px.stop()
		return nil, err
	}
	if err := px.configure(); err != nil {
		px.stop()
		return nil, err
	}
	argv := []string{px.bin, "-f", px.config()}
	if kind == "nginx" {
		argv = []string{px.bin, "-e", "stderr", "-p", px.dir + "/", "-c", px.config()}
	}
	if px.master, err = start(s.logs, kind, nil, argv...); err != nil {
		px.stop()
		return nil, err
	}
	if err := waitServing(addr, 30*time.Second); err != nil {
		px.stop()
		return nil, err
	}
	return px, nil
}

// newProxy prepares kind's template and a directory of its own, empty.
func newProxy(s settings, kind, addr string) (*proxy, error) {
	file := map[string]string{"nginx": "peers/nginx.conf", "haproxy": "peers/haproxy.cfg"}[kind]
	tmpl, err := template.ParseFS(peerConfigs, file)
	if err != nil {
		return nil, err
	}
	px := &proxy{kind: kind, bin: map[string]string{"nginx": s.nginx, "haproxy": s.haproxy}[kind],
		dir: filepath.Join(s.logs, kind), addr: addr, tmpl: tmpl}
	if err := os.RemoveAll(px.dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(px.dir, "tmp"), 0o755); err != nil {
		return nil, err
	}
	return px, nil
}

func (px *proxy) config() string {
	return filepath.Join(px.dir, map[string]string{"nginx": "nginx.conf", "haproxy": "haproxy.cfg"}[px.kind])
}

// startBackends starts the next deployment's Node servers, each on a port
// of its own, all at once (as baton starts a generation's workers), and
// waits until each listens.
func (px *proxy) startBackends(s settings) ([]*proc, []string, error) {
	px.gen++
	addrs, err := freeAddrs(proxyBackends)
	if err != nil {
		return nil, nil, err
	}
	var ps []*proc
	for i, addr := range addrs {
		_, port, _ := splitPort(addr)
		p, err := start(s.logs, fmt.Sprintf("%s-node-%d-%d", px.kind, px.gen, i), []string{"PORT=" + port},
			s.node, filepath.Join(s.root, "contrib", "node", "server.js"))
		if err != nil {
			stopProcs(ps)
			return nil, nil, err
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		if _, _, err := p.wait(reNodeServing, 0, 30*time.Second); err != nil {
			stopProcs(ps)
			return nil, nil, err
		}
	}
	return ps, addrs, nil
}

// configure writes the proxy's configuration for the current servers.
func (px *proxy) configure() error {
	cfg := proxyConfig{Dir: px.dir, Listen: px.addr, Servers: px.servers}
	f, err := os.Create(px.config())
	if err != nil {
		return err
	}
	if err := px.tmpl.Execute(f, cfg); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// deploy replaces the Node servers behind the proxy: new servers, the
// configuration pointing at them, the proxy's graceful reload, and once
// its workers of before have exited (they served the old servers), the
// old servers are stopped in the background: nothing sends them requests
// any more.
func (px *proxy) deploy(s settings) error {
	old := px.backends
	next, addrs, err := px.startBackends(s)
	if err != nil {
		return err
	}
	px.backends, px.servers = next, addrs
	if err := px.configure(); err != nil {
		return err
	}
	master := px.master.cmd.Process.Pid
	before := liveChildren(master)
	if err := px.reload(s); err != nil {
		return err
	}
	if err := waitReplaced(master, before, 30*time.Second); err != nil {
		return fmt.Errorf("%s: %w", px.kind, err)
	}
	px.retiring.Add(1)
	go func() {
		defer px.retiring.Done()
		stopProcs(old)
	}()
	return nil
}

// reload asks the proxy to reload its configuration gracefully, the way
// its packaging does: `nginx -s reload`; SIGUSR2 to HAProxy's master.
func (px *proxy) reload(s settings) error {
	if px.kind == "nginx" {
		_, err := run(nil, px.bin, "-e", "stderr", "-p", px.dir+"/", "-c", px.config(), "-s", "reload")
		return err
	}
	b, err := os.ReadFile(filepath.Join(px.dir, "haproxy.pid"))
	if err != nil {
		return fmt.Errorf("haproxy: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid != px.master.cmd.Process.Pid {
		return fmt.Errorf("haproxy: pid file says %q, want the master's %d", b, px.master.cmd.Process.Pid)
	}
	return syscall.Kill(pid, syscall.SIGUSR2)
}

// stop ends the proxy, then every Node server behind it.
func (px *proxy) stop() {
	if px.master != nil {
		px.master.stop(10 * time.Second)
	}
	px.retiring.Wait()
	stopProcs(px.backends)
}

// waitReplaced waits until none of before (a master's workers) is alive
// any more and master has a worker again: the graceful reload is over.
func waitReplaced(master int, before []int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		now := liveChildren(master)
		left := 0
		for _, pid := range before {
			for _, c := range now {
				if c == pid {
					left++
				}
			}
		}
		if left == 0 && len(now) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reload: %d of %d old workers still running after %v", left, len(before), d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// liveChildren lists pid's children that have not exited (zombies left out).
func liveChildren(pid int) []int {
	var out []int
	for _, c := range children(pid) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(c) + "/stat")
		if err != nil {
			continue
		}
		st := string(b)
		if i := strings.LastIndexByte(st, ')'); i > 0 && len(st) > i+2 && st[i+2] != 'Z' {
			out = append(out, c)
		}
	}
	return out
}

// treeRSS is the resident memory of pid and its children, in MB: for a
// proxy, its master and workers, all of it in front of the application.
// Pages they share are counted once for each.
func treeRSS(pid int) float64 {
	mb := rssMB(pid)
	for _, c := range liveChildren(pid) {
		mb += rssMB(c)
	}
	return mb
}

func stopProcs(ps []*proc) {
	for _, p := range ps {
		p.stop(10 * time.Second)
	}
}
