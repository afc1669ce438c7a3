package integration

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/drain/draintest"
	"github.com/batonhq/baton/loadtest"
)

// Classic BPF's ancillary load of a random number (linux/filter.h).
const (
	skfAdOff    = 0xfffff000 // SKF_AD_OFF, -0x1000
	skfAdRandom = 56         // SKF_AD_RANDOM
)

// reuseGroup is a SO_REUSEPORT group of listening sockets on one port,
// with the kernel's order of its sockets kept beside it: a socket joins at
// the end, and one that leaves is replaced by the last
// (net/core/sock_reuseport.c), which is the index a reuseport BPF program
// returns.
type reuseGroup struct {
	port  int
	socks []int
}

func (g *reuseGroup) listen(t testing.TB) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: g.port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 1024); err != nil {
		t.Fatal(err)
	}
	if g.port == 0 {
		sa, _ := unix.Getsockname(fd)
		g.port = sa.(*unix.SockaddrInet4).Port
	}
	g.socks = append(g.socks, fd)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// leave closes the group's copy of fd, once nothing else holds it.
func (g *reuseGroup) leave(fd int) {
	i := slices.Index(g.socks, fd)
	g.socks[i] = g.socks[len(g.socks)-1]
	g.socks = g.socks[:len(g.socks)-1]
	unix.Close(fd)
}

// steer attaches a program to the group that sends each new connection
// to one of to, at random; with to nil it detaches it (back to the
// kernel's hash).
func (g *reuseGroup) steer(t testing.TB, to []int) {
	t.Helper()
	if to == nil {
		if err := unix.SetsockoptInt(g.socks[0], unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0); err != nil {
			t.Fatal(err)
		}
		return
	}
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfAdOff + skfAdRandom},
		{Code: unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K, K: uint32(len(to))},
	}
	for i, fd := range to {
		idx := uint32(slices.Index(g.socks, fd))
		if i < len(to)-1 {
			prog = append(prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(i), Jt: 0, Jf: 1})
		}
		prog = append(prog, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: idx})
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(g.socks[0], unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog); err != nil {
		t.Fatal(err)
	}
}

// queued returns how many connections wait in fd's accept queue.
func queued(t testing.TB, fd int) uint32 {
	t.Helper()
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		t.Fatal(err)
	}
	return info.Unacked // a listener's current backlog
}

// BenchmarkSteerBeforeStop measures one mechanism of issue 13's item 6,
// without baton: 2 stock uvicorn workers, each on its own SO_REUSEPORT
// socket, replaced 10 times under load in both client modes (a new worker
// on a new socket, then the old one stopped and its socket closed, with
// net.ipv4.tcp_migrate_req=1). "plain" sends the old worker SIGTERM once
// the new one serves; "steered" first attaches a classic BPF program that
// sends new connections to the other sockets only, waits for the old
// socket's accept queue to empty and for a settle time, then signals.
// Reports the failed requests per mode. Run with -benchtime 1x.
func BenchmarkSteerBeforeStop(b *testing.B) {
	if out, err := exec.Command(debianPython, "-c", "import uvicorn").CombinedOutput(); err != nil {
		b.Skipf("uvicorn is not installed: %v %s", err, out)
	}
	sysctl(b, "/proc/sys/net/ipv4/tcp_migrate_req", "1")
	b.Run("sanity", func(b *testing.B) {
		// The program sends every connection where it says.
		var g reuseGroup
		a, c := g.listen(b), g.listen(b)
		g.steer(b, []int{c})
		for range 20 {
			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.port))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
		}
		deadline := time.Now().Add(5 * time.Second)
		for queued(b, c) < 20 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if qa, qc := queued(b, a), queued(b, c); qa != 0 || qc != 20 {
			b.Fatalf("steered 20 connections to the second socket: queues %d and %d", qa, qc)
		}
	})
	for _, settle := range []time.Duration{-1, 0, 100 * time.Millisecond} {
		name := "plain"
		if settle >= 0 {
			name = "steered-settle-" + settle.String()
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				res := replaceUvicorns(b, settle)
				for _, mode := range modes {
					r := res[mode]
					b.Logf("%s, %s: %s %v", name, mode, r, r.Samples)
					b.ReportMetric(float64(r.Failed()), mode.String()+"-failed")
					b.ReportMetric(float64(r.Requests), mode.String()+"-requests")
				}
			}
		})
	}
}

// replaceUvicorns runs the measurement of BenchmarkSteerBeforeStop; a
// negative settle means no steering.
func replaceUvicorns(b *testing.B, settle time.Duration) map[loadtest.Mode]loadtest.Result {
	var g reuseGroup
	type worker struct {
		w  *draintest.Worker
		fd int
	}
	start := func() worker {
		fd := g.listen(b)
		w := draintest.Start(b, []string{debianPython, "-m", "uvicorn", "--fd", "3", "--app-dir", filepath.Join(repoRoot, "contrib/python"),
			"--log-level", "info", "--no-access-log", "asgi:app"}, []draintest.Socket{{Fd: fd}})
		w.Serving(b, "INFO:     Uvicorn running on")
		return worker{w, fd}
	}
	workers := []worker{start(), start()}
	addr := fmt.Sprintf("127.0.0.1:%d", g.port)
	gs := map[loadtest.Mode]*loadtest.Generator{}
	for _, mode := range modes {
		gs[mode] = startLoad(b, addr, mode, 8)
	}
	for round := range 10 {
		old := workers[round%2]
		next := start()
		if settle >= 0 {
			var others []int
			for _, fd := range g.socks {
				if fd != old.fd {
					others = append(others, fd)
				}
			}
			g.steer(b, others)
			deadline := time.Now().Add(5 * time.Second)
			for queued(b, old.fd) > 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(settle)
		}
		old.w.Signal(b, syscall.SIGTERM)
		old.w.Wait(b)
		if settle >= 0 {
			g.steer(b, nil)
		}
		g.leave(old.fd)
		workers[round%2] = next
		for _, gen := range gs {
			waitServed(b, gen, 50)
		}
	}
	res := map[loadtest.Mode]loadtest.Result{}
	for mode, gen := range gs {
		res[mode] = gen.Stop()
	}
	return res
}
