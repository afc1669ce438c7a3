package drain

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"sync"
	"syscall"
	"time"
)

// ServeConns serves a protocol of the caller's own on ln (raw TCP, or a
// unix stream socket): it runs handle for each connection ln accepts, in a
// goroutine under opts.Guard, until a signal from opts.Signals arrives,
// ctx is done or the guard trips, then drains:
//
//  1. STOPPING=1, and ln is closed: only this process's copy of the
//     socket, which the other workers keep accepting from;
//  2. the context every handle got is cancelled: a handle finishes the
//     exchange under way, ends its conversation as its protocol says,
//     closes its connection and returns (a handle that reads should also
//     give up its blocking read, for instance with a deadline, once the
//     context is done);
//  3. when every handle has returned, ServeConns returns nil; at
//     opts.Timeout it closes the connections whose handle still runs,
//     gives those handles 100 ms to return, and returns an error
//     wrapping ErrForced.
//
// It sends READY=1 once accepting. opts.IdleGrace and opts.NoHandlerGuard
// do not apply. The connection is handle's to close; ServeConns closes it
// only at the deadline, or when handle panicked. An accept that fails for
// want of descriptors or memory is logged and tried again after a pause
// (5 ms, doubling up to 1 s), as net/http does; any other accept error
// ends serving.
func ServeConns(ctx context.Context, ln net.Listener, handle func(ctx context.Context, c net.Conn), opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	r := begin(opts)
	defer r.end()

	hctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
		wg    sync.WaitGroup
	)
	served := make(chan error, 1)
	closing := make(chan struct{})
	go func() {
		var pause time.Duration
		for {
			c, err := ln.Accept()
			if err != nil {
				if pause = acceptPause(err, pause); pause > 0 {
					log.Printf("drain: accept: %v; retrying in %v", err, pause)
					select {
					case <-time.After(pause):
						continue
					case <-closing:
					}
				}
				served <- err
				return
			}
			pause = 0
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					wg.Done()
				}()
				if opts.Guard.Do(func() { handle(hctx, c) }) {
					c.Close() // the handle that panicked cannot
				}
			}()
		}
	}()
	r.ready()

	serveErr, _ := r.wait(ctx, served, nil)
	r.notify("STOPPING=1")
	close(closing)
	ln.Close()
	if serveErr == nil {
		<-served // every connection accepted is counted now
	}
	cancel()
	r.errs = append(r.errs, serveErr, waitFor(&wg, opts.Timeout, func() int {
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
		return len(conns)
	}))
	return r.result()
}

// ServePackets serves a datagram protocol of the caller's own on pc (a
// UDP socket, typically shared by every worker): it reads one datagram
// after another and passes each to handle (in the reading goroutine,
// under opts.Guard: handle answers with pc.WriteTo and returns), until a
// signal from opts.Signals arrives, ctx is done or the guard trips. Then
// it sends STOPPING=1 and stops reading: the datagram being handled is
// answered, and what waits in the socket's queue is left to the workers
// that share the socket. It returns when handle has returned, or at
// opts.Timeout with an error wrapping ErrForced. pc is the caller's to
// close; ServePackets only sets its read deadline.
//
// It sends READY=1 once reading. opts.IdleGrace and opts.NoHandlerGuard
// do not apply. maxSize is the largest datagram handle can get (longer
// ones are cut by the kernel); 0 means 65535.
func ServePackets(ctx context.Context, pc net.PacketConn, maxSize int, handle func(pc net.PacketConn, p []byte, from net.Addr), opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	if maxSize <= 0 {
		maxSize = 65535
	}
	r := begin(opts)
	defer r.end()

	var (
		stopping = make(chan struct{})
		wg       sync.WaitGroup
	)
	served := make(chan error, 1)
	wg.Add(1)
	opts.Guard.Go(func() {
		defer wg.Done()
		buf := make([]byte, maxSize)
		for {
			n, from, err := pc.ReadFrom(buf)
			select {
			case <-stopping:
				// Read past the stop (the deadline woke it, or a datagram
				// came just before): left to the others if unread; one
				// read is handled, it was taken from the queue.
				if err == nil {
					handle(pc, buf[:n], from)
				}
				return
			default:
			}
			if err != nil {
				served <- err
				return
			}
			handle(pc, buf[:n], from)
		}
	})
	r.ready()

	serveErr, _ := r.wait(ctx, served, nil)
	r.notify("STOPPING=1")
	close(stopping)
	pc.SetReadDeadline(aLongTimeAgo)
	r.errs = append(r.errs, serveErr, waitFor(&wg, opts.Timeout, func() int { return 1 }))
	return r.result()
}

// ServeFunc gives a server of another kind (a grpc.Server: see package
// grpcdrain) the lifecycle of Serve: it runs serve in a goroutine and
// sends READY=1, and when a signal from opts.Signals arrives, ctx is
// done, opts.Guard trips or serve fails, it sends STOPPING=1 and calls
// stop with a context that ends at opts.Timeout. stop drains the server
// in its protocol's way, gives up at the context's end (returning an
// error that wraps ErrForced, say) and must make serve return: ServeFunc
// waits for serve before it returns. What serve returns once stop was
// called is not an error; serve returning nil before that means the
// server was stopped by someone else, and ServeFunc returns at once
// without calling stop.
//
// opts.IdleGrace and opts.NoHandlerGuard do not apply: handlers are the
// caller's to guard (Guard.Do).
func ServeFunc(ctx context.Context, opts Options, serve func() error, stop func(ctx context.Context) error) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	r := begin(opts)
	defer r.end()

	served := make(chan error, 1)
	go func() { served <- serve() }()
	r.ready()

	serveErr, closed := r.wait(ctx, served, nil)
	if closed {
		return r.result()
	}
	r.notify("STOPPING=1")
	dctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	r.errs = append(r.errs, serveErr, stop(dctx))
	if serveErr == nil {
		<-served
	}
	return r.result()
}

// acceptPause says how long to wait before accepting again after err,
// the pause before being last; 0 for an error that ends serving. Out of
// descriptors or memory, or a connection reset before it was accepted,
// passes: a worker must not drain and exit because clients opened too
// many connections at once. The pause doubles from 5 ms to 1 s, as
// net/http's.
func acceptPause(err error, last time.Duration) time.Duration {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.ECONNRESET} {
		if errors.Is(err, e) {
			return min(max(2*last, 5*time.Millisecond), time.Second)
		}
	}
	return 0
}

// waitFor waits for wg within timeout; at the deadline it calls force,
// which ends what it can and says how many were left, gives what force
// ended afterForce to return, and returns an error wrapping ErrForced.
func waitFor(wg *sync.WaitGroup, timeout time.Duration, force func() int) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		n := force()
		select {
		case <-done:
		case <-time.After(afterForce):
		}
		return fmt.Errorf("%w: %d still being handled at the %v deadline", ErrForced, n, timeout)
	}
}

// afterForce is how long a handle whose connection was closed at the
// deadline gets to return (its read or write fails at once), so that
// ServeConns returns with nothing left running; within the margin baton
// leaves between a worker's deadline and its SIGKILL.
const afterForce = 100 * time.Millisecond
