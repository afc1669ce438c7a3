package integration

import (
	"fmt"
	"testing"

	"github.com/batonhq/baton/drain/draintest"
)

// A TCP and a UDP service of its own protocol (examples/echo, on
// drain.ServeConns and drain.ServePackets) under baton, 2 workers: 10
// reloads under 16 TCP clients and 4 UDP clients fail no TCP exchange,
// and lose no more datagrams than the same clients lose without reloads.
func TestEchoUnderBaton(t *testing.T) {
	b := startConfigBaton(t, func(addr string) string {
		return fmt.Sprintf(`[[listen]]
name = "tcp"
address = "tcp://%[1]s"

[[listen]]
name = "udp"
address = "udp://%[1]s"

[worker]
command = [%[2]q]
count = 2
drain_timeout = "10s"

[reload]
timeout = "60s"
`, addr, bin.echo)
	})
	udp := draintest.StartEchoLoad(4, "udp", b.addr)
	defer udp.Stop()
	udp.WaitOK(t, 2000)
	quiet := udp.Lost.Load() // without reloads
	udp.Lost.Store(0)

	tcp := draintest.StartEchoLoad(16, "tcp", b.addr)
	defer tcp.Stop()
	tcp.WaitOK(t, 500)
	reloads(t, b, 10, func() {
		tcp.WaitOK(t, tcp.OK.Load()+300)
		udp.WaitOK(t, udp.OK.Load()+100)
	})
	tcp.Stop()
	udp.Stop()
	t.Logf("10 reloads: TCP %d exchanges ok, %d failed, %d told bye; UDP %d answered, %d lost (%d lost over 2,000 without reloads), %d wrong",
		tcp.OK.Load(), tcp.Failed.Load(), tcp.Byes.Load(), udp.OK.Load(), udp.Lost.Load(), quiet, udp.Failed.Load())
	if tcp.Failed.Load() != 0 {
		t.Errorf("%d TCP exchanges failed, the first: %v", tcp.Failed.Load(), tcp.FirstErr())
	}
	if udp.Lost.Load() > quiet || udp.Failed.Load() != 0 {
		t.Errorf("%d datagrams lost across the reloads, %d without; %d answered wrong (%v)", udp.Lost.Load(), quiet, udp.Failed.Load(), udp.FirstErr())
	}
	if tcp.Byes.Load() == 0 {
		t.Error("no TCP client was told bye: the reloads drained no connection")
	}
}
