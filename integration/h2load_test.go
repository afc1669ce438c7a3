package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/drain/draintest"
)

// h2loadDuration is each h2load run's -D, in seconds: long enough for its
// connections to be up, a reload and the drain of the generation it
// replaces, with room to spare on a loaded machine (8 s were seen).
const h2loadDuration = 12

// h2loadRun is one h2load process. Its per-request log (a line for each
// stream that closes: start time, status or -1, microseconds) comes
// through a pipe, so that the test sees the load flow as it does.
type h2loadRun struct {
	p                 *proc
	started, replaced time.Time // h2load started; the generation it loaded drained

	mu      sync.Mutex
	ok, bad int
	more    chan struct{} // closed and replaced on every line
	done    chan struct{} // closed at the log's end
}

// startH2load runs `h2load -D h2loadDuration -c c -m m url`, niced.
func startH2load(t *testing.T, h2load, url string, c, m int) *h2loadRun {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// Niced, as startLoad's clients are (loadNice).
	p, read := startFiles(t, []*os.File{pw}, nil, "nice", "-n", strconv.Itoa(loadNice), h2load, "-D", strconv.Itoa(h2loadDuration), "-c", strconv.Itoa(c), "-m", strconv.Itoa(m), "--log-file=/dev/fd/3", url)
	read()
	pw.Close()
	r := &h2loadRun{p: p, started: time.Now(), more: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			f := strings.Split(sc.Text(), "\t")
			r.mu.Lock()
			if len(f) == 3 && f[1] == "200" {
				r.ok++
			} else {
				r.bad++
			}
			close(r.more)
			r.more = make(chan struct{})
			r.mu.Unlock()
		}
	}()
	return r
}

// waitOK waits until n requests of r have been answered 200.
func (r *h2loadRun) waitOK(t *testing.T, n int) {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, more := r.ok, r.more
		r.mu.Unlock()
		if ok >= n {
			return
		}
		select {
		case <-more:
		case <-r.done:
			t.Fatalf("h2load ended after %d answers, before %d:\n%s", ok, n, r.p.out)
		case <-deadline.C:
			t.Fatalf("h2load got %d answers in 30s, not %d:\n%s", ok, n, r.p.out)
		}
	}
}

// h2loadSummary is what h2load prints at its end. In its timing mode
// (-D) a client whose connection the server ends is not replaced, and
// h2load's arithmetic leaves in failed and errored exactly the streams
// that closed without a 2xx: refused by a GOAWAY, reset, or a bad status.
type h2loadSummary struct {
	started, done, succeeded, failed, errored, timeout, ok2xx int
}

var (
	reH2loadRequests = regexp.MustCompile(`requests: \d+ total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	reH2loadStatus   = regexp.MustCompile(`status codes: (\d+) 2xx`)
)

func (s *h2loadSummary) add(o h2loadSummary) {
	s.started, s.done, s.succeeded = s.started+o.started, s.done+o.done, s.succeeded+o.succeeded
	s.failed, s.errored, s.timeout = s.failed+o.failed, s.errored+o.errored, s.timeout+o.timeout
}

func parseH2load(out string) (h2loadSummary, error) {
	m, st := reH2loadRequests.FindStringSubmatch(out), reH2loadStatus.FindStringSubmatch(out)
	if m == nil || st == nil {
		return h2loadSummary{}, fmt.Errorf("no summary in h2load's output")
	}
	n := make([]int, 7)
	for i, s := range append(m[1:], st[1]) {
		n[i], _ = strconv.Atoi(s)
	}
	return h2loadSummary{n[0], n[1], n[2], n[3], n[4], n[5], n[6]}, nil
}

// tcpSockets returns the entries of /proc/net/tcp (IPv4), split in fields:
// local and remote address, state, queues, ..., inode (field 9).
func tcpSockets(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	var socks [][]string
	for _, l := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(l); len(f) > 9 {
			socks = append(socks, f)
		}
	}
	return socks
}

// settled reports whether every one of the c connections pid makes to
// 127.0.0.1:port is up and was accepted by a worker (none waits in the
// listening socket's queue): a reload now replaces the workers of all.
func settled(t *testing.T, pid, port, c int) bool {
	t.Helper()
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	mine := map[string]bool{}
	for _, e := range ents {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if inode, ok := strings.CutPrefix(l, "socket:["); ok {
			mine[strings.TrimSuffix(inode, "]")] = true
		}
	}
	addr := fmt.Sprintf("0100007F:%04X", port)
	up, queued := 0, 0
	for _, f := range tcpSockets(t) {
		switch {
		case f[2] == addr && f[3] == "01" && mine[f[9]]:
			up++
		case f[1] == addr && f[3] == "0A": // LISTEN: rx_queue is the accept queue
			_, rx, _ := strings.Cut(f[4], ":")
			n, _ := strconv.ParseUint(rx, 16, 64)
			queued += int(n)
		}
	}
	return up >= c && queued == 0
}

// h2loadReloads reloads b 10 times, each under a fresh h2load of c clients
// with m streams each (h2load does not reconnect a client whose
// connection the server ended, so one run outlives one reload only), and
// checks that h2load saw no request fail or error and that every
// replaced generation was gone within a second.
func h2loadReloads(t *testing.T, b *configBaton, h2load, url string, c, m int) {
	t.Helper()
	port, err := strconv.Atoi(b.addr[strings.LastIndex(b.addr, ":")+1:])
	if err != nil {
		t.Fatal(err)
	}
	var runs []*h2loadRun
	for i := range 10 {
		r := startH2load(t, h2load, url, c, m)
		runs = append(runs, r)
		r.waitOK(t, 200)
		// Every client is connected to the generation the reload replaces.
		for !settled(t, r.p.cmd.Process.Pid, port, c) {
			select {
			case <-r.p.exited:
				t.Fatalf("h2load exited before its %d connections were up:\n%s", c, r.p.out)
			case <-time.After(10 * time.Millisecond):
			}
		}
		if code, out := b.reloadCmd(t); code != 0 {
			t.Fatalf("reload %d: exit %d: %s", i+1, code, out)
		}
		// Its connections are all gone with it.
		b.out.waitCount(reDrained, i+1, 30*time.Second)
		r.replaced = time.Now()
	}
	var total h2loadSummary
	for i, r := range runs {
		r.p.waitExit(h2loadDuration*time.Second + 30*time.Second)
		<-r.done
		<-r.p.out.done
		s, err := parseH2load(r.p.out.String())
		if err != nil {
			t.Fatalf("run %d: %v:\n%s", i+1, err, r.p.out)
		}
		total.add(s)
		if took := r.replaced.Sub(r.started); took >= h2loadDuration*time.Second {
			t.Errorf("run %d: its reload was done and drained %v after h2load started, past its -D: the machine is too slow for the run to count", i+1, took)
			continue
		}
		if s.failed != 0 || s.errored != 0 || s.timeout != 0 || s.succeeded != s.done || s.ok2xx != s.done || r.bad != 0 {
			t.Errorf("run %d (reload %d): %d started, %d done, %d succeeded, %d failed, %d errored, %d timeout, %d 2xx; %d streams closed without a 200 in its log",
				i+1, i+1, s.started, s.done, s.succeeded, s.failed, s.errored, s.timeout, s.ok2xx, r.bad)
		}
		// A stream never closed: the server dropped its connection under it.
		if s.started != s.done {
			t.Errorf("run %d (reload %d): %d requests started, %d done", i+1, i+1, s.started, s.done)
		}
	}
	var drains []string
	for _, m := range reDrained.FindAllStringSubmatch(b.out.String(), -1) {
		drains = append(drains, m[2])
		if d, err := time.ParseDuration(m[2]); err != nil || d > time.Second {
			t.Errorf("generation %s took %s to drain, want under a second", m[1], m[2])
		}
	}
	t.Logf("10 reloads, h2load -c %d -m %d: %d started, %d done, %d succeeded, %d failed, %d errored, %d timeout; generations drained after %s",
		c, m, total.started, total.done, total.succeeded, total.failed, total.errored, total.timeout, strings.Join(drains, ", "))
}

// HTTP/2 clients that do not retry, nghttp2's h2load, against hello under
// baton, over TLS and h2c (h2load's prior knowledge for http://): 10
// reloads, each under 8 clients with 4 streams each and again 4 clients
// with 100, fail and error no request, and every replaced generation is
// gone within a second. A server that sends a single GOAWAY refuses the
// streams a client opened while it was on the wire (RFC 9113 §6.8).
func TestH2loadUnderBaton(t *testing.T) {
	h2load, err := exec.LookPath("h2load")
	if err != nil {
		t.Fatalf("h2load is not installed (Debian package nghttp2-client; make test installs it): %v", err)
	}
	cert, key := draintest.SelfSigned(t).Files(t)
	for _, tt := range []struct {
		name, scheme string
		args         []string
	}{
		{"tls", "https", []string{"-cert", cert, "-key", key}},
		{"h2c", "http", []string{"-h2c"}},
	} {
		for _, load := range []struct{ c, m int }{{8, 4}, {4, 100}} {
			t.Run(fmt.Sprintf("%s/c%d-m%d", tt.name, load.c, load.m), func(t *testing.T) {
				// Two at once: a run spends half its time waiting for
				// the h2load of its last reload to reach its -D.
				t.Parallel()
				b := startConfigBaton(t, func(addr string) string {
					return batonConfig(addr, 2, append([]string{bin.hello}, tt.args...), "")
				})
				h2loadReloads(t, b, h2load, tt.scheme+"://"+b.addr+"/", load.c, load.m)
			})
		}
	}
}
