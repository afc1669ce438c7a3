package integration

import (
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/loadtest"
)

// debianPython is the interpreter Debian's python3-gunicorn and
// python3-uvicorn install for (another python3 may come first in $PATH).
const debianPython = "/usr/bin/python3"

// realServer is one server of docs/languages.md's table, as the suite
// runs it under baton.
type realServer struct {
	name   string   // the table's first column
	recipe string   // what of baton's it uses ("" for a stock server)
	argv   []string // relative paths are the repository's
	ready  string   // worker.ready
	// needs is a command that exits 0 if the server is installed.
	needs []string
	// clean: with its recipe it must fail no request at a reload;
	// perRequestClean: none with connection-per-request clients.
	clean, perRequestClean bool
	// balance is worker.balance ("" for the default, auto).
	balance string
}

// steered is worker.balance for the rows that measure baton's steering:
// it sends new connections away from a worker and signals it once its
// socket's queue is empty (docs/balancing.md). It is what the default,
// auto, chooses for these servers' listener; the other rows name shared.
const (
	steered = "reuseport"
	shared  = "shared"
)

// cell is the server's recipe as docs/languages.md's table shows it.
func (s realServer) cell() string {
	var parts []string
	if s.recipe != "" {
		parts = append(parts, "`"+s.recipe+"`")
	}
	if s.balance != "" {
		parts = append(parts, fmt.Sprintf("`balance = %q`", s.balance))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " + ")
}

func realServers() []realServer {
	py := filepath.Join(repoRoot, "contrib/python")
	conf := filepath.Join(repoRoot, "contrib/gunicorn/baton.conf.py")
	gunicorn := []string{debianPython, "-m", "gunicorn", "--chdir", py, "--log-level", "warning", "--workers", "1"}
	needGunicorn := []string{debianPython, "-c", "import gunicorn"}
	nodeArgv, needNode := []string{"node", filepath.Join(repoRoot, "contrib/node/server.js")}, []string{"node", "--version"}
	pyArgv, needPython := []string{debianPython, filepath.Join(py, "server.py")}, []string{debianPython, "--version"}
	uvicorn := []string{debianPython, "-m", "uvicorn", "--fd", "3", "--app-dir", py, "--log-level", "warning", "--no-access-log", "asgi:app"}
	needUvicorn := []string{debianPython, "-c", "import uvicorn"}
	uvicornRecipe := []string{debianPython, filepath.Join(py, "baton_uvicorn.py"), "--app-dir", py, "--log-level", "warning", "--no-access-log", "asgi:app"}
	// Stock Puma reports readiness on NOTIFY_SOCKET with the sd_notify
	// gem. Puma up to 6 serves as many keep-alive connections at once as
	// it has threads, and new connections wait behind them
	// (docs/languages.md): 16 threads for the 16 clients.
	rackApp := filepath.Join(repoRoot, "contrib/ruby/config.ru")
	puma := []string{"puma", "--threads", "16:16", "--bind-to-activated-sockets=only", rackApp}
	pumaRecipe := []string{"puma", "-C", filepath.Join(repoRoot, "contrib/ruby/baton.rb"), "--threads", "16:16", rackApp}
	needPuma, needPumaNotify := []string{"puma", "--version"}, []string{"ruby", "-e", `require "sd_notify"`}
	return []realServer{
		{name: "Node http.createServer", recipe: "contrib/node/baton.js", balance: shared, ready: "fd", clean: true, argv: nodeArgv, needs: needNode},
		{name: "Node http.createServer", recipe: "contrib/node/baton.js", balance: steered, ready: "fd", clean: true, argv: nodeArgv, needs: needNode},
		{name: "Python WSGI on the standard library", recipe: "contrib/python/baton.py", balance: shared, ready: "fd", clean: true, argv: pyArgv, needs: needPython},
		{name: "Python WSGI on the standard library", recipe: "contrib/python/baton.py", balance: steered, ready: "fd", clean: true, argv: pyArgv, needs: needPython},
		{name: "gunicorn sync", balance: shared, ready: "notify",
			argv: slices.Concat(gunicorn, []string{"--worker-class", "sync", "server:app"}), needs: needGunicorn},
		{name: "gunicorn sync", balance: steered, ready: "notify", perRequestClean: true,
			argv: slices.Concat(gunicorn, []string{"--worker-class", "sync", "server:app"}), needs: needGunicorn},
		{name: "gunicorn sync", recipe: "contrib/gunicorn/baton.conf.py", balance: shared, ready: "notify", clean: true,
			argv: slices.Concat(gunicorn, []string{"--config", conf, "--worker-class", "sync", "server:app"}), needs: needGunicorn},
		{name: "gunicorn gthread", balance: shared, ready: "notify",
			argv: slices.Concat(gunicorn, []string{"--worker-class", "gthread", "--threads", "4", "server:app"}), needs: needGunicorn},
		{name: "gunicorn gthread", recipe: "contrib/gunicorn/baton.conf.py", balance: shared, ready: "notify", clean: true,
			argv: slices.Concat(gunicorn, []string{"--config", conf, "--worker-class", "gthread", "--threads", "4", "server:app"}), needs: needGunicorn},
		{name: "gunicorn gthread", balance: steered, ready: "notify", perRequestClean: true,
			argv: slices.Concat(gunicorn, []string{"--worker-class", "gthread", "--threads", "4", "server:app"}), needs: needGunicorn},
		{name: "uvicorn --fd 3", balance: shared, ready: "delay:1s", argv: uvicorn, needs: needUvicorn},
		{name: "uvicorn --fd 3", balance: steered, ready: "delay:1s", perRequestClean: true,
			argv: uvicorn, needs: needUvicorn},
		{name: "uvicorn", recipe: "contrib/python/baton_uvicorn.py", balance: shared, ready: "fd", clean: true,
			argv: uvicornRecipe, needs: needUvicorn},
		{name: "uvicorn", recipe: "contrib/python/baton_uvicorn.py", balance: steered, ready: "fd", clean: true,
			argv: uvicornRecipe, needs: needUvicorn},
		{name: "Puma", balance: shared, ready: "notify", argv: puma, needs: needPumaNotify},
		{name: "Puma", balance: steered, ready: "notify", argv: puma, needs: needPumaNotify},
		{name: "Puma", recipe: "contrib/ruby/baton.rb", balance: shared, ready: "fd", clean: true,
			argv: pumaRecipe, needs: needPuma},
		{name: "Puma", recipe: "contrib/ruby/baton.rb", balance: steered, ready: "fd", clean: true,
			argv: pumaRecipe, needs: needPuma},
	}
}

// Real servers of other languages, unmodified, under baton: 2 workers,
// 10 reloads under 8 clients in each client mode at once. Every one
// serves and refuses no connection; with baton's recipe for it (a module
// for Node, Python's standard library and uvicorn, a config file for
// gunicorn and Puma) none fails a request. What a stock server loses is
// measured and printed as docs/languages.md's table, which is copied
// from the last run. Two servers run at once (serversAtOnce), each under
// its own baton on its own port, to keep the suite's time.
func TestRealServers(t *testing.T) {
	servers := realServers()
	rows := make([]string, len(servers))
	slots := make(chan struct{}, serversAtOnce)
	t.Run("servers", func(t *testing.T) {
		for i, s := range servers {
			label := s.name + ", stock"
			if s.recipe != "" || s.balance != "" {
				label = s.name + " + " + strings.ReplaceAll(s.cell(), "`", "")
			}
			t.Run(strings.NewReplacer(" ", "_", "/", "_").Replace(label), func(t *testing.T) {
				t.Parallel()
				slots <- struct{}{}
				defer func() { <-slots }()
				rows[i] = measureRealServer(t, s, label)
			})
		}
	})
	t.Logf("docs/languages.md, measured by TestRealServers (2 workers, 10 reloads, 8 clients per mode):\n"+
		"| server | recipe | keep-alive: failed of requests | per request: failed of requests |\n|---|---|---|---|\n%s",
		strings.Join(rows, "\n"))
}

// serversAtOnce is how many of TestRealServers' servers run at the same
// time. Each spends most of its time starting workers; two at once take
// about two thirds of the time of one after the other on two cores.
const serversAtOnce = 2

// measureRealServer runs s under baton through 10 reloads under load,
// fails t if s loses what it must not, and returns its table row.
func measureRealServer(t *testing.T, s realServer, label string) string {
	if out, err := exec.Command(s.needs[0], s.needs[1:]...).CombinedOutput(); err != nil {
		t.Skipf("%s is not installed (%s: %v %s); make test installs it", s.name, strings.Join(s.needs, " "), err, out)
	}
	argv := slices.Clone(s.argv)
	var err error
	if argv[0], err = exec.LookPath(argv[0]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b := startConfigBaton(t, func(addr string) string {
		// Reloads come faster here than a recipe's drain may take
		// (gunicorn gthread's: its keep-alive timeout and 1.5 s):
		// no generation is killed for draining beside two others.
		worker := fmt.Sprintf("ready = %q", s.ready)
		if s.balance != "" {
			worker += fmt.Sprintf("\nbalance = %q", s.balance)
		}
		return batonConfig(addr, 2, argv, worker) + "max_draining = 10\n"
	})
	gs := reloadsUnderLoad(t, b, 10, 8)
	row := "| " + s.name + " | " + s.cell()
	for _, mode := range modes {
		r := gs[mode].Stop()
		t.Logf("%s, %s: 10 reloads: %s %v", label, mode, r, r.Samples)
		row += " | " + failures(r)
		if r.Refused != 0 {
			t.Errorf("%s: %d connections refused", mode, r.Refused)
		}
		if (s.clean || s.perRequestClean && mode == loadtest.PerRequest) && r.Failed() != 0 {
			t.Errorf("%s with %s: %d requests failed: %s %v", mode, s.cell(), r.Failed(), r, r.Samples)
		}
	}
	t.Logf("%s: started and reloaded 10 times under load in %v", label, time.Since(start).Round(100*time.Millisecond))
	return row + " |"
}

// failures is a result as docs/languages.md gives it: "0 of 12,345", or
// "78 of 105,153 (76 reset, 2 EOF)".
func failures(r loadtest.Result) string {
	s := fmt.Sprintf("%d of %s", r.Failed(), thousands(r.Requests))
	var kinds []string
	for _, k := range []struct {
		n    int64
		name string
	}{{r.Refused, "refused"}, {r.Reset, "reset"}, {r.EOF, "EOF"}, {r.Timeout, "timeout"}, {r.BadStatus, "bad status"}, {r.Other, "other"}} {
		if k.n > 0 {
			kinds = append(kinds, fmt.Sprintf("%d %s", k.n, k.name))
		}
	}
	if len(kinds) > 0 {
		s += " (" + strings.Join(kinds, ", ") + ")"
	}
	return s
}

// thousands writes n with commas: 105153 -> "105,153".
func thousands(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// gunicorn's master reports READY=1 before its worker has loaded the app;
// with contrib/gunicorn/baton.conf.py the worker reports it once the app
// is loaded. So a reload to an app that fails to load is rolled back with
// the old workers serving, where stock gunicorn would be promoted and then
// exit.
func TestGunicornRecipeReadiness(t *testing.T) {
	if out, err := exec.Command(debianPython, "-c", "import gunicorn").CombinedOutput(); err != nil {
		t.Skipf("gunicorn is not installed: %v %s; make test installs it", err, out)
	}
	gunicorn := func(app string) []string {
		return []string{debianPython, "-m", "gunicorn", "--chdir", filepath.Join(repoRoot, "contrib/python"),
			"--config", filepath.Join(repoRoot, "contrib/gunicorn/baton.conf.py"), "--worker-class", "gthread", app}
	}
	b := startConfigBaton(t, func(addr string) string { return batonConfig(addr, 2, gunicorn("server:app"), "") })
	before := b.workerPIDs()
	g := startLoad(t, b.addr, loadtest.KeepAlive, 4)
	b.write(t, batonConfig(b.addr, 2, gunicorn("server:no_such_app"), ""))
	code, out := b.reloadCmd(t)
	waitServed(t, g, 100)
	r := g.Stop()
	if code != 1 || !strings.Contains(out, "rolled back") {
		t.Errorf("reload to an app that cannot load: exit %d, %q; want exit 1, rolled back", code, out)
	}
	if after := b.workerPIDs(); !maps.Equal(after, before) {
		t.Errorf("workers %v before the failed reload, %v after: want the same", before, after)
	}
	if r.Failed() != 0 {
		t.Errorf("%d requests failed across the failed reload: %s %v", r.Failed(), r, r.Samples)
	}
}

// docs/languages.md's table is TestRealServers' output: one row for each
// server and recipe the test runs, in its order, and 0 failed in both
// modes wherever the test demands it.
func TestLanguagesDocTable(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "languages.md"))
	if err != nil {
		t.Fatal(err)
	}
	var rows [][]string
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) != 4 || !regexp.MustCompile(`^\d+ of [\d,]+`).MatchString(cells[2]) {
			continue // not a row of measurements
		}
		rows = append(rows, cells)
	}
	servers := realServers()
	if len(rows) != len(servers) {
		t.Fatalf("docs/languages.md has %d measured rows, TestRealServers runs %d servers", len(rows), len(servers))
	}
	for i, s := range servers {
		recipe := s.cell()
		if r := rows[i]; r[0] != s.name || r[1] != recipe {
			t.Errorf("row %d is %q, %q; TestRealServers runs %q, %q", i+1, r[0], r[1], s.name, recipe)
		} else if s.clean && !strings.HasPrefix(r[2], "0 of ") || (s.clean || s.perRequestClean) && !strings.HasPrefix(r[3], "0 of ") {
			t.Errorf("row %d (%s with %s) reports failures the test does not allow: %q, %q", i+1, s.name, recipe, r[2], r[3])
		}
	}
}

// With a drain timeout shorter than the gthread grace, the config's grace
// ends before gunicorn's own deadline (graceful_timeout, a second before
// baton's): reloads under load fail no request. A grace that outlasted
// it had the master SIGKILL its worker with requests in flight.
func TestGunicornRecipeShortDrain(t *testing.T) {
	if out, err := exec.Command(debianPython, "-c", "import gunicorn").CombinedOutput(); err != nil {
		t.Skipf("gunicorn is not installed: %v %s; make test installs it", err, out)
	}
	argv := []string{debianPython, "-m", "gunicorn", "--chdir", filepath.Join(repoRoot, "contrib/python"),
		"--config", filepath.Join(repoRoot, "contrib/gunicorn/baton.conf.py"), "--worker-class", "gthread", "--threads", "4", "server:app"}
	b := startConfigBaton(t, func(addr string) string {
		cfg := batonConfig(addr, 2, argv, "") + "max_draining = 10\n"
		return strings.Replace(cfg, `drain_timeout = "10s"`, `drain_timeout = "3s"`, 1)
	})
	gs := reloadsUnderLoad(t, b, 3, 8)
	// The last generation replaced drains within the 3 s, so its end is in
	// the load too.
	b.out.wait(regexp.MustCompile(`msg="generation 3 drained"`), 30*time.Second)
	for mode, g := range gs {
		r := g.Stop()
		t.Logf("gunicorn gthread + config, drain_timeout 3s, %s: 3 reloads: %s", mode, r)
		if r.Failed() != 0 {
			t.Errorf("%s: %d requests failed: %s %v", mode, r.Failed(), r, r.Samples)
		}
	}
}

// reloadsUnderLoad puts c clients in each client mode on b at once and
// reloads it n times, each reload answered and followed by served
// requests; it returns the loads, still running.
func reloadsUnderLoad(t *testing.T, b *configBaton, n, c int) map[loadtest.Mode]*loadtest.Generator {
	t.Helper()
	gs := map[loadtest.Mode]*loadtest.Generator{}
	for _, mode := range modes {
		gs[mode] = startLoad(t, b.addr, mode, c)
	}
	for i := range n {
		if code, out := b.reloadCmd(t); code != 0 {
			t.Fatalf("reload %d: exit %d: %s", i+1, code, out)
		}
		for _, g := range gs {
			waitServed(t, g, 50)
		}
	}
	return gs
}

// Stock uvicorn closes at SIGTERM a connection it accepted and has read
// nothing of (docs/languages.md). Steered (reuseport), baton signals an
// old worker only once it has read from every connection it accepted,
// for up to a second (steer.SignalWait): a client that connected just
// before a reload and sends its request 400 ms after it (a slow client,
// or one starved of CPU) still gets its answer. Signalled once its queue
// was empty, the worker closed the connection before the request came.
// The new generation is taken for ready 100 ms after it starts (uvicorn
// takes longer; what is dealt to it waits in its socket's queue), so
// that the connection is still young at the look.
func TestSteeredStopWaitsForTheRequest(t *testing.T) {
	if out, err := exec.Command(debianPython, "-c", "import uvicorn").CombinedOutput(); err != nil {
		t.Skipf("uvicorn is not installed: %v %s; make test installs it", err, out)
	}
	py := filepath.Join(repoRoot, "contrib/python")
	argv := []string{debianPython, "-m", "uvicorn", "--fd", "3", "--app-dir", py, "--log-level", "warning", "--no-access-log", "asgi:app"}
	b := startConfigBaton(t, func(addr string) string {
		return batonConfig(addr, 1, argv, fmt.Sprintf("ready = \"delay:100ms\"\nbalance = %q", steered))
	})
	old := b.workerPIDs()[0]
	// uvicorn serves once it has started; it has closed this connection
	// when the answer ends.
	if resp, err := rawGet(b.addr, nil); !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("GET /: %q, %v", resp, err)
	}

	sockets := func() int {
		n := 0
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", old))
		for _, e := range ents {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", old, e.Name())); strings.HasPrefix(l, "socket:") {
				n++
			}
		}
		return n
	}
	before := sockets()
	c, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); sockets() == before; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("uvicorn never accepted the connection")
		}
	}

	slowRequestAcrossReload(t, b, c, old)
	if b.out.count(heldFor(old)) != 1 {
		t.Errorf("baton did not say once that the old worker's SIGTERM waited:\n%s", b.out)
	}
}

// heldFor matches baton's line saying that pid's SIGTERM waits for it to
// read the connections it accepted.
func heldFor(pid int) *regexp.Regexp {
	return regexp.MustCompile(fmt.Sprintf(`its SIGTERM waits for it to read them" pid=%d `, pid))
}

// A Go worker on the drain package says with READY=1 that it serves what
// it accepted (drain.DrainsAcceptedField): its SIGTERM never waits for
// it to read a connection, and the slow client of the test above is
// served all the same (drain keeps a connection with no request yet for
// its idle grace, a second).
// Waiting for every such connection held each drain of a reload under
// keep-alive load by up to a second, and the generations drained past
// max_draining were killed (TestReloadUnderLoad).
func TestSteeredStopGoWorkerNotHeld(t *testing.T) {
	b := startConfigBaton(t, func(addr string) string {
		return batonConfig(addr, 1, nil, fmt.Sprintf("balance = %q", steered))
	})
	old := b.workerPIDs()[0]
	c, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	slowRequestAcrossReload(t, b, c, old)
	if b.out.count(heldFor(old)) != 0 {
		t.Errorf("the Go worker's SIGTERM waited for it to read:\n%s", b.out)
	}
}

// slowRequestAcrossReload reloads b, sends a request on c (a connection
// the old worker old accepted) 400 ms later, which must be answered 200,
// and waits for old to exit.
func slowRequestAcrossReload(t *testing.T, b *configBaton, c net.Conn, old int) {
	t.Helper()
	if code, out := b.reloadCmd(t); code != 0 {
		t.Fatalf("reload: exit %d: %s", code, out)
	}
	time.Sleep(400 * time.Millisecond) // the client's own delay: what the tests are about
	if resp, err := rawGet(b.addr, c); !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Errorf("the request sent 400 ms after the reload: %q, %v; want 200", resp, err)
	}
	b.out.wait(regexp.MustCompile(fmt.Sprintf(`msg="worker exited" slot=0 pid=%d .*how="exit status 0"`, old)), 10*time.Second)
}

// rawGet sends GET / with Connection: close on c (nil: a new connection
// to addr) and returns all the server sent until it closed.
func rawGet(addr string, c net.Conn) (string, error) {
	if c == nil {
		var err error
		if c, err = net.Dial("tcp", addr); err != nil {
			return "", err
		}
		defer c.Close()
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: baton\r\nConnection: close\r\n\r\n"); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := io.ReadAll(c)
	return string(resp), err
}
