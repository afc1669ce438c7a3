package integration

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/loadtest"
)

// A worker told to drain while a response streams for 60 s is gone by
// drain_timeout (2 s) plus a small margin; the other worker never stops
// serving.
func TestDrainDeadlineCutsLongStream(t *testing.T) {
	b := startBaton(t, "--workers", "2", "--drain-timeout", "2s", "--", bin.hello)
	g := startLoad(t, b.addr, loadtest.KeepAlive, 16)
	c, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /stream?s=60 HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 1)); err != nil { // streaming has begun
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(resp.Header.Get("X-Pid"))
	start := time.Now()
	syscall.Kill(pid, syscall.SIGTERM)
	b.out.wait(regexp.MustCompile(`msg="worker exited" slot=\d+ pid=`+strconv.Itoa(pid)+` `), 10*time.Second)
	took := time.Since(start)
	waitServed(t, g, 300)
	r := g.Stop()
	t.Logf("streaming worker gone %s after SIGTERM (drain_timeout 2s); load: %s", took.Round(time.Millisecond), r)
	if took > 2500*time.Millisecond {
		t.Errorf("the worker took %s to go, want drain_timeout (2s) plus a small margin", took)
	}
	if r.Failed() != 0 {
		t.Errorf("%d requests failed while one worker drained: %s %v", r.Failed(), r, r.Samples)
	}
}

// A worker that exits 1 at start spends the restart budget: exactly
// `limit` restarts, then baton gives up: with on_giveup = "exit" it exits
// 3; with "degrade" the workers that do start keep serving.
func TestCrashLoopGiveUp(t *testing.T) {
	crashSlot1 := []string{"sh", "-c", `[ "$BATON_WORKER" = 1 ] && exit 1; exec "$0"`, bin.hello}
	cfg := func(addr, onGiveUp string) string {
		c := batonConfig(addr, 2, crashSlot1, "")
		return c + fmt.Sprintf("\n[restart]\nlimit = 5\nwindow = \"60s\"\nbackoff_min = \"20ms\"\nbackoff_max = \"160ms\"\non_giveup = %q\n", onGiveUp)
	}
	reRestart := regexp.MustCompile(`msg="worker exited unexpectedly, replacing it" slot=1 `)
	t.Run("exit", func(t *testing.T) {
		p := newConfigBaton(t, func(addr string) string { return cfg(addr, "exit") }).proc
		if code := p.waitExit(30 * time.Second); code != 3 {
			t.Fatalf("baton exited %d, want 3 (gave up)", code)
		}
		<-p.out.done
		if n := p.out.count(reRestart); n != 5 {
			t.Errorf("%d restarts before giving up, want exactly restart.limit = 5", n)
		}
		if !regexp.MustCompile(`baton run: restart budget spent: 5 restarts within 1m0s`).MatchString(p.out.String()) {
			t.Errorf("exit message does not say the budget was spent:\n%s", p.out)
		}
	})
	t.Run("degrade", func(t *testing.T) {
		b := newConfigBaton(t, func(addr string) string { return cfg(addr, "degrade") })
		p, addr := b.proc, b.addr
		p.out.wait(regexp.MustCompile(`msg="giving up on restarts"`), 30*time.Second)
		p.out.wait(reAllReady, 10*time.Second)
		r, err := loadtest.Run(withTimeout(t, time.Minute), loadtest.Options{Addr: addr, Concurrency: 8, Requests: 500})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("degraded: %s", r)
		if r.Failed() != 0 || len(r.PIDs) != 1 {
			t.Errorf("degraded service: %s, want the one survivor serving everything", r)
		}
		if n := p.out.count(reRestart); n != 5 {
			t.Errorf("%d restarts before giving up, want 5", n)
		}
	})
}

// SIGKILL of a random worker every 200 ms for 15 s under load: no
// connection is ever refused, the only failures are requests on the
// killed workers' connections, and the pool is whole afterwards.
func TestKillStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("15 s storm")
	}
	// A generous budget and a short backoff: this test is about the
	// sockets, not the budget.
	b := startConfigBaton(t, hellos(2, "\n[restart]\nlimit = 1000\nbackoff_min = \"10ms\"\nbackoff_max = \"100ms\"\n"))
	p, addr := b.proc, b.addr
	results := map[loadtest.Mode]*loadtest.Generator{}
	for _, mode := range modes {
		results[mode] = startLoad(t, addr, mode, 16)
	}
	kills := 0
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); <-tick.C {
		var live []int
		for _, pid := range b.workerPIDs() {
			if processExists(pid) && ppid(pid) == p.cmd.Process.Pid {
				live = append(live, pid)
			}
		}
		if len(live) == 0 {
			continue
		}
		syscall.Kill(live[rand.IntN(len(live))], syscall.SIGKILL)
		kills++
	}
	// The pool is whole again: 2 live workers, serving.
	deadline := time.Now().Add(10 * time.Second)
	for st := stats(t, b.control); st.Workers != 2 || st.Reloading; st = stats(t, b.control) {
		if time.Now().After(deadline) {
			t.Fatalf("pool not whole after the storm: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for mode, g := range results {
		waitServed(t, g, 200)
		r := g.Stop()
		t.Logf("%d kills in 15s, %s: %s", kills, mode, r)
		if r.Refused != 0 {
			t.Errorf("%s: %d connections refused", mode, r.Refused)
		}
		if r.Timeout != 0 || r.BadStatus != 0 {
			t.Errorf("%s: failures other than the killed workers' connections: %s %v", mode, r, r.Samples)
		}
		// Each kill can fail at most the connections the killed worker
		// held: one per client.
		if r.Failed() > int64(kills*16) {
			t.Errorf("%s: %d failures for %d kills of 16 clients", mode, r.Failed(), kills)
		}
	}
}
