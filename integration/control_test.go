package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The helper processes of TestControlFlood: the test binary, run with
// holdControlEnv set to a control socket's path, opens holdCountEnv
// connections to it, writes holdBytesEnv bytes (no newline) on each,
// prints how many it holds, and keeps them until its stdin closes.
const (
	holdControlEnv = "BATON_IT_HOLD_CONTROL"
	holdCountEnv   = "BATON_IT_HOLD_COUNT"
	holdBytesEnv   = "BATON_IT_HOLD_BYTES"
)

func holdControl(path string) int {
	n, _ := strconv.Atoi(os.Getenv(holdCountEnv))
	size, _ := strconv.Atoi(os.Getenv(holdBytesEnv))
	payload := []byte(strings.Repeat("x", size))
	var conns []net.Conn
	failed := 0
	for range n {
		c, err := net.Dial("unix", path)
		if err != nil {
			failed++
			continue
		}
		if size > 0 {
			c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			c.Write(payload) // a busy answer may close it first: that is fine
		}
		conns = append(conns, c)
	}
	fmt.Printf("held %d failed %d\n", len(conns), failed)
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	return 0
}

// holders runs the helpers: n connections of size bytes, spread over
// four processes, and returns a function that ends them.
func holders(t *testing.T, path string, n, size int) func() {
	t.Helper()
	var stdins []io.Closer
	var cmds []*exec.Cmd
	held, failed := 0, 0
	for range 4 {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), holdControlEnv+"="+path, holdCountEnv+"="+strconv.Itoa(n/4), holdBytesEnv+"="+strconv.Itoa(size))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stdins, cmds = append(stdins, in), append(cmds, cmd)
		var h, f int
		if _, err := fmt.Fscanf(bufio.NewReader(out), "held %d failed %d\n", &h, &f); err != nil {
			t.Fatalf("helper %d: %v", cmd.Process.Pid, err)
		}
		held, failed = held+h, failed+f
	}
	t.Logf("%d clients (%d bytes each) hold %d control connections; %d could not connect", n, size, held, failed)
	var once sync.Once
	end := func() {
		once.Do(func() {
			for i, cmd := range cmds {
				stdins[i].Close()
				cmd.Wait()
			}
		})
	}
	t.Cleanup(end)
	return end
}

// rssMax samples a process's resident memory until stopped, and keeps the
// largest value seen.
type rssMax struct {
	mu   sync.Mutex
	max  int
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(pid int) *rssMax {
	r := &rssMax{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			kb := rssKB(pid)
			r.mu.Lock()
			r.max = max(r.max, kb)
			r.mu.Unlock()
			select {
			case <-tick.C:
			case <-r.stop:
				return
			}
		}
	}()
	return r
}

func (r *rssMax) end() int {
	close(r.stop)
	<-r.done
	return r.max
}

// Control clients (root and baton's user may connect) can take neither
// baton's descriptors nor its memory: 20,000 idle connections, then 4,000
// each sending 65,000 bytes without a newline, and a worker killed under
// each is replaced and serves. baton's resident memory stays below 50 MB
// throughout and comes back below 20 MB. (A build without the race
// detector, whose shadow memory would hide baton's own.)
func TestControlFloodKeepsServing(t *testing.T) {
	dir := t.TempDir()
	control := filepath.Join(dir, "ctl.sock")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := start(t, nil, batonPlain(t), "run", "--listen", "http=tcp://"+addr, "--workers", "1", "--control", control, "--", bin.hello)
	p.out.wait(reAllReady, 30*time.Second)
	b := &baton{proc: p, addr: addr}
	rss := sampleRSS(p.cmd.Process.Pid)
	reReady := regexp.MustCompile(`msg="worker ready" slot=0 pid=(\d+)`)
	for _, phase := range []struct{ n, size int }{{20000, 0}, {4000, 65000}} {
		end := holders(t, control, phase.n, phase.size)
		victim := b.workerPIDs()[0]
		from := p.out.len()
		syscall.Kill(victim, syscall.SIGKILL)
		line, _ := p.out.waitFrom(from, reReady, 30*time.Second)
		replacement := reReady.FindStringSubmatch(line)[1]
		body, err := getOnce(addr, "/")
		if err != nil || !strings.Contains(body, "hello from pid "+replacement) {
			t.Fatalf("after killing worker %d under %d control clients: %q, %v; want the replacement %s to answer", victim, phase.n, body, err, replacement)
		}
		fds := openFDs(t, p.cmd.Process.Pid)
		t.Logf("worker %d killed under %d control clients: replaced by %s, which serves; baton holds %d descriptors", victim, phase.n, replacement, fds)
		if fds > 200 {
			t.Errorf("baton holds %d descriptors under %d control clients, want at most a few dozen beyond the 64 it serves at once", fds, phase.n)
		}
		end()
	}
	peak := rss.end()
	var now int
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if now = rssKB(p.cmd.Process.Pid); now < 20<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("baton's resident memory is still %d kB a minute after the clients left, want below 20 MB", now)
			break
		}
	}
	t.Logf("baton's resident memory: at most %d kB during the floods, %d kB after", peak, now)
	if peak >= 50<<10 {
		t.Errorf("baton's resident memory reached %d kB, want below 50 MB", peak)
	}
}

// 200 control connections that send nothing: the workers serve on,
// and once the connections close baton holds exactly the descriptors it
// held before.
func TestIdleControlClientsLeaveNothing(t *testing.T) {
	control := filepath.Join(t.TempDir(), "ctl.sock")
	b := startBaton(t, "--workers", "1", "--control", control, "--", bin.hello)
	pid := b.cmd.Process.Pid
	stats(t, control) // baton's own descriptors settle once it has answered
	before := openFDs(t, pid)
	end := holders(t, control, 200, 0)
	if body, err := getOnce(b.addr, "/"); err != nil || !strings.HasPrefix(body, "hello from pid") {
		t.Errorf("with 200 idle control clients: %q, %v", body, err)
	}
	end()
	var now int
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if now = openFDs(t, pid); now == before || time.Now().After(deadline) {
			break
		}
	}
	if now != before {
		t.Errorf("baton holds %d descriptors after the idle clients left, %d before", now, before)
	}
	if st := stats(t, control); st.Generation != 1 {
		t.Errorf("stats after the idle clients left: %+v", st)
	}
}
