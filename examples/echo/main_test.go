package main

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/batonhq/baton/drain/draintest"
)

// roleEnv makes the re-executed test binary run main instead of the tests.
const roleEnv = "ECHO_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestDrainUnderLoad: two echo processes share a TCP and a UDP socket,
// as under baton; one gets SIGTERM while 16 TCP and 4 UDP clients use
// them. It exits 0, no TCP exchange fails (its clients are told bye and
// go to the other), no datagram is answered wrong, and no more are lost
// than the same clients lose before the drain.
func TestDrainUnderLoad(t *testing.T) {
	tln, ts := draintest.Listen(t, "tcp")
	upc, us := draintest.ListenUDP(t, "udp")
	start := func() *draintest.Worker {
		env := []string{roleEnv + "=1", "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")}
		w := draintest.Start(t, []string{os.Args[0]}, []draintest.Socket{ts, us}, env...)
		w.Serving(t, "echo: serving on ")
		return w
	}
	a := start()
	udp := draintest.StartEchoLoad(4, "udp", upc.LocalAddr().String())
	defer udp.Stop()
	udp.WaitOK(t, 1000)
	quiet := udp.Lost.Load()
	udp.Lost.Store(0)
	tcp := draintest.StartEchoLoad(16, "tcp", tln.Addr().String())
	defer tcp.Stop()
	tcp.WaitOK(t, 500)
	start()
	tcp.WaitOK(t, tcp.OK.Load()+500)

	a.Signal(t, syscall.SIGTERM)
	if st := a.Wait(t); st != 0 {
		t.Errorf("drained worker: exit status %d, want 0", st)
	}
	tcp.WaitOK(t, tcp.OK.Load()+500)
	udp.WaitOK(t, udp.OK.Load()+500)
	tcp.Stop()
	udp.Stop()
	t.Logf("TCP %d ok, %d failed, %d told bye; UDP %d answered, %d lost (%d before the drain), %d wrong",
		tcp.OK.Load(), tcp.Failed.Load(), tcp.Byes.Load(), udp.OK.Load(), udp.Lost.Load(), quiet, udp.Failed.Load())
	if tcp.Failed.Load() != 0 {
		t.Errorf("%d TCP exchanges failed, the first: %v", tcp.Failed.Load(), tcp.FirstErr())
	}
	if tcp.Byes.Load() == 0 {
		t.Error("no TCP client was told bye: the drain ended no connection")
	}
	if udp.Lost.Load() > quiet || udp.Failed.Load() != 0 {
		t.Errorf("%d datagrams lost across the drain, %d before; %d answered wrong (%v)", udp.Lost.Load(), quiet, udp.Failed.Load(), udp.FirstErr())
	}
}

// TestNoSockets: without the sockets echo says so and exits 1.
func TestNoSockets(t *testing.T) {
	w := draintest.Start(t, []string{os.Args[0]}, nil, roleEnv+"=1")
	if line := w.Line(t); !strings.HasPrefix(line, "echo: ") {
		t.Errorf("said %q", line)
	}
	if st := w.Wait(t); st != 1 {
		t.Errorf("exit status %d, want 1", st)
	}
}
