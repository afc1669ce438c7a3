package drain_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/drain"
)

// echoConn is a line echo service's handler, as a service built on
// ServeConns would write it: each line is answered; once the drain began
// the answer says "bye" and the connection closes, so that the client
// sends its next line to another worker (the service's own keep-alive
// rule, as "Connection: close" is HTTP's).
func echoConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() {
		// A client silent for a second after the drain began is idle.
		c.SetReadDeadline(time.Now().Add(time.Second))
	})
	defer stop()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if ctx.Err() != nil {
			fmt.Fprintf(c, "%s bye\n", strings.TrimSuffix(line, "\n"))
			return
		}
		io.WriteString(c, line)
	}
}

// stream is one ServeConns or ServePackets running in the test.
type stream struct {
	cancel context.CancelFunc
	done   chan error
	ready  chan struct{}
}

func startStream(t *testing.T, run func(ctx context.Context, opts drain.Options) error) *stream {
	t.Helper()
	s := &stream{done: make(chan error, 1), ready: make(chan struct{})}
	opts := drain.Options{
		Timeout: 5 * time.Second,
		Signals: []os.Signal{syscall.SIGUSR2},
		Notify: func(state string) error {
			if state == "READY=1" {
				close(s.ready)
			}
			return nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- run(ctx, opts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(eventTimeout):
			t.Error("a stream server did not return after the test")
		}
	})
	waitFor(t, s.ready, "READY=1")
	return s
}

// stop drains s and returns its result.
func (s *stream) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(eventTimeout):
		t.Fatal("the stream server did not return after its drain")
		return nil
	}
}

// A TCP echo service on ServeConns: 8 clients exchanging lines without a
// pause while the old server drains and a new one accepts on the same
// socket: every exchange is answered, the old server ends long before
// its deadline.
func TestServeConnsUnderLoad(t *testing.T) {
	ln := listen(t)
	serve := func(l net.Listener) func(ctx context.Context, opts drain.Options) error {
		return func(ctx context.Context, opts drain.Options) error { return drain.ServeConns(ctx, l, echoConn, opts) }
	}
	old := startStream(t, serve(dup(t, ln)))
	var (
		stop             = make(chan struct{})
		wg               sync.WaitGroup
		ok, failed, byes atomic.Int64
		firstErr         atomic.Value
	)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c net.Conn
			var r *bufio.Reader
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if c == nil {
					var err error
					if c, err = net.Dial("tcp", ln.Addr().String()); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
						return
					}
					r = bufio.NewReader(c)
				}
				want := fmt.Sprintf("client %d line %d", i, n)
				fmt.Fprintf(c, "%s\n", want)
				got, err := r.ReadString('\n')
				switch {
				case err == nil && got == want+"\n":
					ok.Add(1)
				case err == nil && got == want+" bye\n":
					ok.Add(1)
					byes.Add(1)
					c.Close()
					c = nil
				default:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("line %q: got %q, %v", want, got, err))
					c.Close()
					c = nil
				}
			}
		}()
	}
	atLeast(t, &ok, 500)
	startStream(t, serve(dup(t, ln)))
	began := time.Now()
	err := old.stop(t)
	took := time.Since(began)
	atLeast(t, &ok, ok.Load()+500)
	close(stop)
	wg.Wait()
	t.Logf("the old server drained in %v: %d exchanges ok, %d failed, %d clients told bye", took, ok.Load(), failed.Load(), byes.Load())
	if err != nil {
		t.Errorf("the old server's drain: %v", err)
	}
	if failed.Load() != 0 {
		t.Errorf("%d exchanges failed, the first: %v", failed.Load(), firstErr.Load())
	}
	if byes.Load() == 0 {
		t.Error("no client was told bye: the old server had no connection when it drained")
	}
}

// atLeast waits until n reaches want, polling.
func atLeast(t *testing.T, n *atomic.Int64, want int64) {
	t.Helper()
	for deadline := time.Now().Add(eventTimeout); n.Load() < want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d, want %d within %v", n.Load(), want, eventTimeout)
		}
	}
}

// A handle that never returns is ended at the deadline.
func TestServeConnsDeadline(t *testing.T) {
	ln := listen(t)
	handling := make(chan struct{})
	s := startStream(t, func(ctx context.Context, opts drain.Options) error {
		opts.Timeout = 200 * time.Millisecond
		return drain.ServeConns(ctx, dup(t, ln), func(_ context.Context, c net.Conn) {
			close(handling)
			io.Copy(io.Discard, c) // until the connection is closed
		}, opts)
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, handling, "the connection being handled")
	if err := s.stop(t); !errors.Is(err, drain.ErrForced) {
		t.Errorf("drain = %v, want ErrForced", err)
	}
}

// dupPacket returns another PacketConn on pc's socket, as a worker that
// inherited it would have.
func dupPacket(t *testing.T, pc *net.UDPConn) net.PacketConn {
	t.Helper()
	c := dupOf(t, pc, net.FilePacketConn)
	t.Cleanup(func() { c.Close() })
	return c
}

// A UDP echo service on ServePackets, its socket shared by an old and a
// new server: while the old one drains (it stops reading, and what waits
// in the socket's queue is the new one's), every datagram of 4 clients
// sending one after another is answered, as without a drain.
func TestServePacketsUnderLoad(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	echo := func(pc net.PacketConn, p []byte, from net.Addr) { pc.WriteTo(p, from) }
	serve := func(c net.PacketConn) func(ctx context.Context, opts drain.Options) error {
		return func(ctx context.Context, opts drain.Options) error { return drain.ServePackets(ctx, c, 0, echo, opts) }
	}
	old := startStream(t, serve(dupPacket(t, pc)))
	var (
		stop         = make(chan struct{})
		wg           sync.WaitGroup
		answered     atomic.Int64
		lost, failed atomic.Int64
	)
	for i := range 4 {
		c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				want := fmt.Sprintf("client %d datagram %d", i, n)
				c.Write([]byte(want))
				c.SetReadDeadline(time.Now().Add(time.Second))
				m, err := c.Read(buf)
				switch {
				case err != nil:
					lost.Add(1)
				case string(buf[:m]) != want:
					failed.Add(1)
				default:
					answered.Add(1)
				}
			}
		}()
	}
	atLeast(t, &answered, 500)
	startStream(t, serve(dupPacket(t, pc)))
	if err := old.stop(t); err != nil {
		t.Errorf("the old server's drain: %v", err)
	}
	atLeast(t, &answered, answered.Load()+500)
	close(stop)
	wg.Wait()
	t.Logf("%d datagrams answered, %d lost, %d answered wrong", answered.Load(), lost.Load(), failed.Load())
	if lost.Load() != 0 || failed.Load() != 0 {
		t.Errorf("%d datagrams lost, %d answered wrong, across the drain", lost.Load(), failed.Load())
	}
}
