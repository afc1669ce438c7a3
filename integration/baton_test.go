package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/loadtest"
)

// getOnce does one request on a new connection and returns the body.
func getOnce(addr, path string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("status %s", resp.Status)
	}
	return string(b), nil
}

// SIGTERM to baton: requests the workers already accepted complete, baton
// exits 0 within drain_timeout, and nothing of its tree is left.
func TestBatonSIGTERMCompletesAcceptedRequests(t *testing.T) {
	b := startBaton(t, "--workers", "2", "--drain-timeout", "10s", "--", bin.hello)
	g := startLoad(t, b.addr, loadtest.KeepAlive, 32)
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := getOnce(b.addr, "/slow?ms=1500")
			if err == nil && !strings.HasPrefix(body, "hello from pid") {
				err = fmt.Errorf("body %q", body)
			}
			errs <- err
		}()
	}
	// Every request has reached a handler once each shows in the log.
	b.out.waitCount(regexp.MustCompile(`slow request started`), n, 20*time.Second)
	b.descendants()
	start := time.Now()
	syscall.Kill(b.cmd.Process.Pid, syscall.SIGTERM)
	if code := b.waitExit(15 * time.Second); code != 0 {
		t.Fatalf("baton exited %d after SIGTERM, want 0", code)
	}
	took := time.Since(start)
	r := g.Stop()
	// Once the workers stopped accepting, new connections of the load are
	// refused, or reset when baton closes the socket they queued on; no
	// request a worker took may fail or hang.
	t.Logf("load across the stop: %s", r)
	if r.BadStatus != 0 || r.Timeout != 0 {
		t.Errorf("load across the stop: %s %v", r, r.Samples)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("an accepted request failed during the stop: %v", err)
		}
	}
	if took > 10*time.Second {
		t.Errorf("baton took %s to stop, more than drain_timeout", took)
	}
	t.Logf("baton stopped %s after SIGTERM with %d slow requests in flight", took.Round(time.Millisecond), n)
}

// A worker's daemon that left its process group (setsid) and holds the
// listener is ended too when baton stops: SIGTERM, and SIGKILL at the
// drain deadline for one that ignores it. Nothing of the tree is left and
// the port can be bound again at once.
func TestStopEndsWhatWorkersLeft(t *testing.T) {
	for _, tt := range []struct{ name, daemon string }{
		{"ends on SIGTERM", `setsid sleep 300 &`},
		{"ignores SIGTERM", `setsid sh -c 'trap "" TERM; exec sleep 300' &`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := startBaton(t, "--workers", "2", "--drain-timeout", "2s", "--", "sh", "-c", tt.daemon+` exec "$0"`, bin.hello)
			var daemons []int
			for deadline := time.Now().Add(10 * time.Second); len(daemons) < 2; time.Sleep(10 * time.Millisecond) {
				daemons = nil
				for _, pid := range b.descendants() {
					if comm(pid) == "sleep" {
						daemons = append(daemons, pid)
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("found %d setsid sleeps under baton, want 2", len(daemons))
				}
			}
			tree := b.descendants()
			start := time.Now()
			syscall.Kill(b.cmd.Process.Pid, syscall.SIGTERM)
			if code := b.waitExit(20 * time.Second); code != 0 {
				t.Fatalf("baton exited %d after SIGTERM, want 0", code)
			}
			for _, pid := range tree {
				if processExists(pid) {
					t.Errorf("process %d (%s) of baton's tree outlived it", pid, comm(pid))
				}
			}
			ln, err := net.Listen("tcp", b.addr)
			if err != nil {
				t.Fatalf("the port is still taken after baton stopped: %v", err)
			}
			ln.Close()
			t.Logf("baton and the %d daemons its workers left were gone %s after SIGTERM", len(daemons), time.Since(start).Round(time.Millisecond))
		})
	}
}

// SIGKILL of baton: the kernel kills every worker (parent-death signal).
func TestBatonSIGKILLLeavesNoWorker(t *testing.T) {
	b := startBaton(t, "--workers", "2", "--", bin.hello)
	workers := b.descendants()
	if len(workers) < 2 {
		t.Fatalf("found %d processes under baton, want at least 2 workers", len(workers))
	}
	// A killed baton cannot remove its runtime directory: the test does.
	dir := filepath.Dir(controlOf(t, b.proc))
	t.Cleanup(func() { os.RemoveAll(dir) })
	syscall.Kill(b.cmd.Process.Pid, syscall.SIGKILL)
	b.waitExit(10 * time.Second)
	// Cleanup's checkNoDescendants fails the test if any survived.
}

// A worker that never sends READY=1 makes baton exit non-zero within the
// timeout, naming it.
func TestNeverReadyExitsNamingWorker(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, nil, bin.baton, "run", "--listen", "http=tcp://"+addr, "--workers", "2",
		"--ready", "notify", "--reload-timeout", "1s", "--", "sleep", "60")
	start := time.Now()
	if code := p.waitExit(15 * time.Second); code != 1 {
		t.Fatalf("baton exited %d, want 1", code)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("baton took %s to give up on a 1s timeout", d)
	}
	if !regexp.MustCompile(`baton run: workers did not become ready: worker 0 \(pid \d+\) did not become ready within 1s`).MatchString(p.out.String()) {
		t.Errorf("exit message does not name the worker:\n%s", p.out)
	}
}

// Bad configuration or flags: one line naming the key, exit 2, nothing
// started.
func TestBadConfigExitsBeforeStarting(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "baton.toml")
	os.WriteFile(cfg, []byte("[[listen]]\nname = \"http\"\naddress = \"tcp://127.0.0.1:1\"\n\n[worker]\ncommand = [\"sleep\", \"60\"]\ncount = \"two\"\n"), 0o600)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--config", cfg}, "baton run: config: " + cfg + ":7: worker.count:"},
		{[]string{"--listen", "http=tcp://127.0.0.1:1", "--workers", "-3", "--", "sleep", "60"}, `baton run: config: flag --workers: "-3"`},
		{[]string{"--listen", "http=tcp://127.0.0.1:1", "--ready", "later", "--", "sleep", "60"}, `baton run: config: flag --ready: worker.ready: "later"`},
		{[]string{"--listen", "http=ftp://127.0.0.1:1", "--", "sleep", "60"}, `baton run: config: flag --listen: listen[0].address: "ftp://127.0.0.1:1": unknown scheme`},
	}
	// A duration without a unit would be nanoseconds: a drain that kills
	// at once. baton run and baton check refuse it alike.
	bare := filepath.Join(dir, "bare.toml")
	os.WriteFile(bare, []byte("[[listen]]\nname = \"http\"\naddress = \"tcp://127.0.0.1:1\"\n\n[worker]\ncommand = [\"sleep\", \"60\"]\ndrain_timeout = 30\n"), 0o600)
	tests = append(tests, struct {
		args []string
		want string
	}{[]string{"--config", bare}, "baton run: config: " + bare + `:7: worker.drain_timeout: 30 has no unit: write "30s"`})
	for _, tt := range tests {
		p := start(t, nil, append([]string{bin.baton, "run"}, tt.args...)...)
		if code := p.waitExit(10 * time.Second); code != 2 {
			t.Errorf("baton run %v exited %d, want 2", tt.args, code)
		}
		<-p.out.done
		out := p.out.String()
		if !strings.HasPrefix(out, tt.want) || strings.Count(out, "\n") != 0 {
			t.Errorf("baton run %v printed %q, want one line starting %q", tt.args, out, tt.want)
		}
	}
	p := start(t, nil, bin.baton, "check", "--config", bare)
	if code := p.waitExit(10 * time.Second); code != 2 {
		t.Errorf("baton check of a bare-number duration exited %d, want 2", code)
	}
	<-p.out.done
	if want := "baton check: config: " + bare + `:7: worker.drain_timeout: 30 has no unit: write "30s"`; p.out.String() != want {
		t.Errorf("baton check printed %q, want %q", p.out.String(), want)
	}
}

// After 200 worker replacements baton holds exactly as many descriptors
// as after the first two. (With reuseport, auto's choice here, a
// replacement starts beside the worker it replaces, and the first of each
// slot binds a third socket that the later ones share.)
func TestNoFDGrowthOver200Replacements(t *testing.T) {
	// Every replacement counts against the restart budget: allow 202.
	b := startConfigBaton(t, hellos(2, "\n[restart]\nlimit = 1000\n"))
	reExited := regexp.MustCompile(`msg="worker exited"`)
	from := b.out.len()
	replace := func(n int) {
		for i := 0; i < n; i++ {
			slot := i % 2
			victim := b.workerPIDs()[slot]
			syscall.Kill(victim, syscall.SIGTERM)
			_, from = b.out.waitFrom(from, regexp.MustCompile(fmt.Sprintf(`msg="worker ready" slot=%d `, slot)), 20*time.Second)
		}
	}
	replace(2)
	b.out.waitCount(reExited, 2, 30*time.Second)
	// Once the exited workers' output pipes are closed too (below): the
	// count has stayed the same for 200ms.
	before := openFDs(t, b.cmd.Process.Pid)
	for same, deadline := time.Now(), time.Now().Add(5*time.Second); time.Since(same) < 200*time.Millisecond && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if now := openFDs(t, b.cmd.Process.Pid); now != before {
			before, same = now, time.Now()
		}
	}
	replace(200)
	// Every old worker has exited (202 exits), so their pipes are closed.
	b.out.waitCount(reExited, 202, 30*time.Second)
	if _, err := getOnce(b.addr, "/"); err != nil {
		t.Fatalf("not serving after 200 replacements: %v", err)
	}
	// A worker's exit and the end of its output pipe reach baton
	// separately: give the last forwarders a moment to see end of file.
	after := openFDs(t, b.cmd.Process.Pid)
	for settle := time.Now().Add(5 * time.Second); after != before && time.Now().Before(settle); {
		time.Sleep(20 * time.Millisecond)
		after = openFDs(t, b.cmd.Process.Pid)
	}
	t.Logf("baton fds: %d before, %d after 200 replacements", before, after)
	if after != before {
		t.Errorf("baton has %d open descriptors after 200 replacements, %d before", after, before)
	}
}
