package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

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

// eventTimeout bounds every wait for an event; reaching it fails the test.
const eventTimeout = 20 * time.Second

// handled runs echo on the server side of a loopback TCP connection and
// returns the client side, the drain's cancel, and a channel closed when
// echo returned.
func handled(t *testing.T) (net.Conn, context.CancelFunc, chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan struct{})
	go func() {
		defer close(done)
		echo(ctx, s)
	}()
	t.Cleanup(func() {
		c.Close()
		select {
		case <-done:
		case <-time.After(eventTimeout):
			t.Error("echo did not return after the test")
		}
	})
	return c, cancel, done
}

func returned(t *testing.T, done chan struct{}, why string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(eventTimeout):
		t.Fatalf("echo still runs: %s", why)
	}
}

// TestLongLine: a line longer than maxLine closes the connection, rather
// than growing the worker's memory for as long as the client sends.
func TestLongLine(t *testing.T) {
	c, _, done := handled(t)
	go func() {
		chunk := bytes.Repeat([]byte("x"), 4096)
		for range 4 * maxLine / len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	returned(t, done, "a line four times maxLine was still being read")
}

// TestClientThatNeverReads: a client that sends lines and never reads the
// answers does not hold the drain: echo returns within drainIdle of it.
func TestClientThatNeverReads(t *testing.T) {
	c, cancel, done := handled(t)
	line := append(bytes.Repeat([]byte("y"), 1000), '\n')
	// Until the answers fill both sockets' buffers and echo blocks on
	// its write: then the client's own writes block.
	for {
		c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Write(line); err != nil {
			break
		}
	}
	cancel()
	returned(t, done, "blocked writing to a client that never reads, after the drain began")
}

// TestEcho: lines are answered until the drain, then the next one gets
// " bye" and the connection closes.
func TestEcho(t *testing.T) {
	c, cancel, done := handled(t)
	c.SetDeadline(time.Now().Add(eventTimeout))
	r := bufio.NewReader(c)
	io.WriteString(c, "one\n")
	if got, err := r.ReadString('\n'); got != "one\n" {
		t.Fatalf("answer %q, %v", got, err)
	}
	cancel()
	io.WriteString(c, "two\n")
	if got, err := r.ReadString('\n'); got != "two bye\n" {
		t.Errorf("answer after the drain began %q, %v: want \"two bye\"", got, err)
	}
	returned(t, done, "after its bye")
}
