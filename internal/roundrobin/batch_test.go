package roundrobin

import (
	"bytes"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/wire"
)

// batchSetup returns a Balancer listening on a loopback socket no client
// dials, and the acceptor, with workers attached and routed (by pid,
// from 1000), each having said it reads batches; and the workers' ends
// of their channels. onStuck gets the stuck ones.
func batchSetup(t *testing.T, workers int, bound time.Duration, onStuck func(Stuck)) (*Balancer, *acceptor, []int) {
	return batchSetupName(t, "http", 0, workers, bound, onStuck)
}

// batchSetupName is batchSetup with the listener's name, and the send
// buffer of baton's ends of the channels (0: the system's).
func batchSetupName(t *testing.T, name string, sndbuf, workers int, bound time.Duration, onStuck func(Stuck)) (*Balancer, *acceptor, []int) {
	t.Helper()
	b := New(nil, onStuck)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := b.Listen(1, int(f.Fd()), name); err != nil {
		t.Fatal(err)
	}
	var ends, pids []int
	for i := range workers {
		c, err := b.Channel(map[int]string{1: name}, bound)
		if err != nil {
			t.Fatal(err)
		}
		if sndbuf > 0 {
			if err := unix.SetsockoptInt(c.ours, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf); err != nil {
				t.Fatal(err)
			}
		}
		end := c.WorkerFd
		t.Cleanup(func() { unix.Close(end) })
		b.Attach(1000+i, c)
		if _, err := unix.Write(end, wire.AppendBatch(nil, wire.MaxBatch)); err != nil {
			t.Fatal(err)
		}
		ends, pids = append(ends, end), append(pids, 1000+i)
	}
	t.Cleanup(b.Close)
	b.Route(pids)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		n := 0
		for _, w := range b.workers {
			if w.batch == wire.MaxBatch {
				n++
			}
		}
		b.mu.Unlock()
		if n == workers {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the workers' BATON_BATCH was not read in 10s")
		}
		time.Sleep(time.Millisecond)
	}
	b.mu.Lock()
	a := b.acceptors[1]
	b.mu.Unlock()
	return b, a, ends
}

// conn returns a descriptor to pass as a connection: one end of a
// socket pair, whose other end the test keeps.
func conn(t *testing.T) int {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	return fds[0]
}

// deal passes n connections in one go, as one wake-up of the accept loop
// does, and returns their sequence numbers.
func deal(t *testing.T, b *Balancer, a *acceptor, n int) []uint64 {
	t.Helper()
	b.mu.Lock()
	before := b.seq
	for range n {
		if !b.pass(a, passed{fd: conn(t), acc: a}) {
			t.Fatal("no worker took a connection")
		}
	}
	var seqs []uint64
	for s := before + 1; s <= b.seq; s++ {
		seqs = append(seqs, s)
	}
	b.unlock()
	return seqs
}

// recvAll reads one read's worth of end: its lines' sequence numbers and
// how many descriptors came (closed).
func recvAll(t *testing.T, end int, size int) (seqs []uint64, fds int) {
	t.Helper()
	buf := make([]byte, size)
	oob := make([]byte, unix.CmsgSpace(wire.MaxBatch*4))
	n, oobn, _, _, err := unix.Recvmsg(end, buf, oob, 0)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		rights, err := unix.ParseUnixRights(&m)
		if err != nil {
			t.Fatal(err)
		}
		for _, fd := range rights {
			unix.Close(fd)
		}
		fds += len(rights)
	}
	for line := range bytes.Lines(buf[:n]) {
		if c, ok := wire.ParseConn(bytes.TrimSuffix(line, []byte("\n"))); ok {
			seqs = append(seqs, c.Seq)
		}
	}
	return seqs, fds
}

// The connections of one wake-up go to a worker that reads batches in one
// message: their lines and their descriptors, in order.
func TestBatchOneMessage(t *testing.T) {
	b, a, ends := batchSetup(t, 1, 0, nil)
	seqs := deal(t, b, a, 5)
	got, fds := recvAll(t, ends[0], 64<<10)
	if !slices.Equal(got, seqs) || fds != 5 {
		t.Errorf("one read: lines %v with %d descriptors, want %v with 5", got, fds, seqs)
	}
	// More than wire.MaxBatch: a message per MaxBatch.
	seqs = deal(t, b, a, wire.MaxBatch+1)
	got, fds = recvAll(t, ends[0], 64<<10)
	if !slices.Equal(got, seqs[:wire.MaxBatch]) || fds != wire.MaxBatch {
		t.Errorf("first read: lines %v with %d descriptors, want %v with %d", got, fds, seqs[:wire.MaxBatch], wire.MaxBatch)
	}
	got, fds = recvAll(t, ends[0], 64<<10)
	if !slices.Equal(got, seqs[wire.MaxBatch:]) || fds != 1 {
		t.Errorf("second read: lines %v with %d descriptors, want %v with 1", got, fds, seqs[wire.MaxBatch:])
	}
}

// With a send buffer so small that Linux would cut a batch into pieces,
// batches are shorter: every read of the channel still holds whole
// messages, each line with its descriptor.
func TestBatchSmallSendBuffer(t *testing.T) {
	name := strings.Repeat("l", 200) // lines of about 300 bytes
	b, a, ends := batchSetupName(t, name, 4096, 1, 0, nil)
	seqs := deal(t, b, a, wire.MaxBatch)
	var got []uint64
	for len(got) < len(seqs) {
		lines, fds := recvAll(t, ends[0], 64<<10)
		if len(lines) != fds {
			t.Fatalf("a read held %d lines and %d descriptors", len(lines), fds)
		}
		got = append(got, lines...)
	}
	if !slices.Equal(got, seqs) {
		t.Errorf("lines %v, want %v", got, seqs)
	}
}

// A stuck worker that began to read a batch has all its descriptors: the
// batch stays its, and the batch it did not begin goes back, whole.
func TestBatchStuckWorkerKeepsWhatItBegan(t *testing.T) {
	stuck := make(chan Stuck, 1)
	b, a, ends := batchSetup(t, 1, 100*time.Millisecond, func(s Stuck) { stuck <- s })
	deal(t, b, a, 3)
	second := deal(t, b, a, 2)
	// It reads a few bytes of the first batch, and so all 3 descriptors.
	if _, fds := recvAll(t, ends[0], 10); fds != 3 {
		t.Fatalf("a read of 10 bytes of the first batch brought %d descriptors, want 3", fds)
	}
	var s Stuck
	select {
	case s = <-stuck:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker was not found stuck in 10s")
	}
	if s.TakenBack != 2 {
		t.Errorf("taken back %d connections, want 2 (the second batch)", s.TakenBack)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var back []uint64
	for _, p := range a.queue { // no other worker: they wait
		back = append(back, p.seq)
	}
	w := b.workers[1000]
	if len(back) != 2 || w == nil || len(w.unacked) != 3 {
		t.Errorf("queued %v (the second batch was %v); the stuck worker holds %d, want 3", back, second, len(w.unacked))
	}
}

// A batch that cannot be sent at all (the worker's channel is full) goes
// to another worker, whole, and the first gets no more.
func TestBatchFailedSendGoesElsewhere(t *testing.T) {
	b, a, ends := batchSetup(t, 2, 0, nil)
	// The first worker's channel fills: baton's writes to it fail.
	b.mu.Lock()
	full := b.workers[1000].fd
	for {
		if _, err := unix.Write(full, bytes.Repeat([]byte("x"), 4096)); err != nil {
			break
		}
	}
	// The next turn is 1000's: a batch of 2 to it, then 1001's.
	a.cursor = 0
	for range 2 {
		b.batch(b.workers[1000], a, passed{fd: conn(t), acc: a, seq: b.seq + 1})
		b.seq++
	}
	b.unlock()
	got, fds := recvAll(t, ends[1], 64<<10)
	if len(got) != 2 || fds != 2 {
		t.Errorf("the other worker read lines %v with %d descriptors, want 2 with 2", got, fds)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if w := b.workers[1000]; !w.shut || len(w.unacked) != 0 {
		t.Errorf("the full worker: shut %v, holding %d, want shut and none", w.shut, len(w.unacked))
	}
}
