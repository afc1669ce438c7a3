package drain_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/drain"
	"github.com/batonhq/baton/drain/draintest"
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
	load := draintest.StartEchoLoad(8, "tcp", ln.Addr().String())
	defer load.Stop()
	load.WaitOK(t, 500)
	startStream(t, serve(dup(t, ln)))
	began := time.Now()
	err := old.stop(t)
	took := time.Since(began)
	load.WaitOK(t, load.OK.Load()+500)
	load.Stop()
	t.Logf("the old server drained in %v: %d exchanges ok, %d failed, %d clients told bye", took, load.OK.Load(), load.Failed.Load(), load.Byes.Load())
	if err != nil {
		t.Errorf("the old server's drain: %v", err)
	}
	if load.Failed.Load() != 0 {
		t.Errorf("%d exchanges failed, the first: %v", load.Failed.Load(), load.FirstErr())
	}
	if load.Byes.Load() == 0 {
		t.Error("no client was told bye: the old server had no connection when it drained")
	}
}

// A handle that never returns is ended at the deadline.
func TestServeConnsDeadline(t *testing.T) {
	ln := listen(t)
	handling := make(chan struct{})
	var returned atomic.Bool
	s := startStream(t, func(ctx context.Context, opts drain.Options) error {
		opts.Timeout = 200 * time.Millisecond
		return drain.ServeConns(ctx, dup(t, ln), func(_ context.Context, c net.Conn) {
			close(handling)
			io.Copy(io.Discard, c)            // until the connection is closed
			time.Sleep(10 * time.Millisecond) // its cleanup
			returned.Store(true)
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
	if !returned.Load() {
		t.Error("ServeConns returned while the handle of the connection it closed still ran")
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
	load := draintest.StartEchoLoad(4, "udp", pc.LocalAddr().String())
	defer load.Stop()
	load.WaitOK(t, 500)
	startStream(t, serve(dupPacket(t, pc)))
	if err := old.stop(t); err != nil {
		t.Errorf("the old server's drain: %v", err)
	}
	load.WaitOK(t, load.OK.Load()+500)
	load.Stop()
	t.Logf("%d datagrams answered, %d lost, %d answered wrong", load.OK.Load(), load.Lost.Load(), load.Failed.Load())
	if load.Lost.Load() != 0 || load.Failed.Load() != 0 {
		t.Errorf("%d datagrams lost, %d failed (%v), across the drain", load.Lost.Load(), load.Failed.Load(), load.FirstErr())
	}
}

// TestServeFunc: the lifecycle ServeFunc gives another kind of server.
func TestServeFunc(t *testing.T) {
	t.Run("drain", func(t *testing.T) {
		var states []string
		notify := func(s string) error { states = append(states, s); return nil }
		ctx, cancel := context.WithCancel(context.Background())
		stopped, served := make(chan struct{}), make(chan struct{})
		var deadline time.Time
		done := make(chan error, 1)
		go func() {
			done <- drain.ServeFunc(ctx, drain.Options{Timeout: time.Hour, Notify: notify, Signals: []os.Signal{syscall.SIGUSR2}},
				func() error {
					<-stopped
					defer close(served)
					return errors.New("accept: use of a closed listener") // what serve says once stopped: not an error
				},
				func(ctx context.Context) error {
					deadline, _ = ctx.Deadline()
					close(stopped)
					return nil
				})
		}()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeFunc: %v, want nil", err)
		}
		select {
		case <-served:
		default:
			t.Error("ServeFunc returned before serve")
		}
		if want := []string{"READY=1", "STOPPING=1"}; !slices.Equal(states, want) {
			t.Errorf("notified %q, want %q", states, want)
		}
		if left := time.Until(deadline); left < 59*time.Minute {
			t.Errorf("stop's context ends in %v, want the one-hour drain timeout", left)
		}
	})
	t.Run("stopped by someone else", func(t *testing.T) {
		err := drain.ServeFunc(context.Background(), drain.Options{Notify: func(string) error { return nil }},
			func() error { return nil },
			func(context.Context) error { t.Error("stop called"); return nil })
		if err != nil {
			t.Errorf("ServeFunc: %v, want nil", err)
		}
	})
	t.Run("serve fails", func(t *testing.T) {
		boom := errors.New("boom")
		stopped := false
		err := drain.ServeFunc(context.Background(), drain.Options{Notify: func(string) error { return nil }},
			func() error { return boom },
			func(context.Context) error { stopped = true; return nil })
		if !errors.Is(err, boom) || !stopped {
			t.Errorf("ServeFunc: %v (stopped %t), want boom, and the drain run all the same", err, stopped)
		}
	})
}

// flakyListener fails its first accepts as a process out of descriptors
// does, then accepts.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// Running out of descriptors for a moment is not a reason to drain: the
// accept is tried again and the next client is served.
func TestServeConnsRetriesEMFILE(t *testing.T) {
	ln := &flakyListener{Listener: listen(t)}
	ln.fails.Store(3)
	s := startStream(t, func(ctx context.Context, opts drain.Options) error {
		return drain.ServeConns(ctx, ln, echoConn, opts)
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(eventTimeout))
	io.WriteString(c, "ping\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); line != "ping\n" {
		t.Fatalf("answer %q, %v: want ping, from a server that kept accepting", line, err)
	}
	select {
	case err := <-s.done:
		t.Fatalf("ServeConns returned %v after EMFILE", err)
	default:
	}
	if err := s.stop(t); err != nil {
		t.Errorf("drain = %v", err)
	}
}

// A handle that panics has its connection closed for it: the client is
// not left waiting on a descriptor no one will close.
func TestServeConnsClosesAfterPanic(t *testing.T) {
	ln := listen(t)
	guard := &drain.Guard{OnPanic: func(any, []byte) {}}
	startStream(t, func(ctx context.Context, opts drain.Options) error {
		opts.Guard = guard
		return drain.ServeConns(ctx, dup(t, ln), func(context.Context, net.Conn) { panic("handler bug") }, opts)
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(eventTimeout))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read %d, %v: want EOF, the connection closed after the panic", n, err)
	}
	if !errors.Is(guard.Err(), drain.ErrPanicked) {
		t.Errorf("guard.Err() = %v, want ErrPanicked", guard.Err())
	}
}
