package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// The helper process of BenchmarkNotifyFlood: the test binary, run with
// notifyFloodEnv set to a notify socket's path, sends it notifyCountEnv
// READY=1 datagrams: a process that is no worker's, as far from baton in
// the process tree as the test itself is.
const (
	notifyFloodEnv = "BATON_IT_NOTIFY_FLOOD"
	notifyCountEnv = "BATON_IT_NOTIFY_COUNT"
)

func notifyFlood(path string) int {
	n, _ := strconv.Atoi(os.Getenv(notifyCountEnv))
	c, err := net.Dial("unixgram", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	for range n {
		if _, err := c.Write([]byte("READY=1")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// cpuTicks returns a process's user and system time, in clock ticks.
func cpuTicks(pid int) int {
	f := statFields(pid)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

// BenchmarkNotifyFlood measures what a flood of notify datagrams from a
// process that is no worker costs baton: 100,000 READY=1 from a root
// process outside baton's tree (every other user is kept out by the
// socket's mode). It reports baton's CPU time per datagram and checks
// that each one was dropped and counted. Run with -benchtime 1x.
func BenchmarkNotifyFlood(b *testing.B) {
	const n = 100000
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	p := start(b, nil, bin.baton, "run", "--listen", "http=tcp://"+addr, "--workers", "1", "--", bin.hello)
	p.out.wait(reAllReady, 30*time.Second)
	pid := p.cmd.Process.Pid
	control := controlOf(b, p)
	notify := filepath.Join(filepath.Dir(control), "notify-"+strconv.Itoa(pid)+".sock")
	for i := 0; i < b.N; i++ {
		dropped := stats(b, control).NotifyDrops
		before := cpuTicks(pid)
		start := time.Now()
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), notifyFloodEnv+"="+notify, notifyCountEnv+"="+strconv.Itoa(n))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("flood: %v: %s", err, out)
		}
		// Every datagram is counted once the loop has seen it.
		for deadline := time.Now().Add(time.Minute); stats(b, control).NotifyDrops < dropped+n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("only %d of %d datagrams counted as dropped", stats(b, control).NotifyDrops-dropped, n)
			}
		}
		took := time.Since(start)
		cpu := time.Duration(cpuTicks(pid)-before) * time.Second / 100 // USER_HZ
		b.ReportMetric(float64(cpu.Microseconds())/n, "baton-cpu-µs/datagram")
		b.ReportMetric(float64(n)/took.Seconds(), "datagrams/s")
		b.Logf("%d datagrams in %s: baton used %s of CPU", n, took.Round(time.Millisecond), cpu)
	}
}
