// Package roundrobin is baton's side of worker.balance = "round-robin"
// (docs/balancing.md): it accepts the connections of the stream listeners
// itself and passes each one's descriptor to the next ready worker,
// i = (i + 1) mod n, over that worker's channel (the wire format is in the
// handoff package's documentation). A connection stays baton's until the
// worker answers that it took it, so one a worker never took (it stopped,
// or died) goes to another; and one a worker leaves unread on its channel
// past its bound goes to another while that worker is stuck (unread.go).
// A worker that reads several connections per message (BATON_BATCH) gets
// those dealt to it in one go (a wake-up of the accept loop) in one
// sendmsg, which is sent before the Balancer's lock is let go.
package roundrobin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/wire"
)

// Window is how many connections a worker may hold unanswered; a worker
// with that many is skipped until it answers. Large enough that a burst
// of new connections (64 clients connecting at once) still goes strictly
// in turn: with 8, the workers that answered first took the most (a
// fairness CV of 0.34 over 4 workers with 64 keep-alive clients).
const Window = 64

// maxLine bounds a worker's answer; a longer line is skipped.
const maxLine = 4096

// Balancer passes connections to workers.
type Balancer struct {
	log     *slog.Logger
	onStuck func(Stuck)

	mu        sync.Mutex
	workers   map[int]*worker // attached, by pid
	order     []*worker       // the ready ones, in Route's order
	acceptors map[int]*acceptor
	passed    map[string]uint64 // by listener name, for as long as the Balancer lives
	reclaimed map[string]uint64 // taken back from stuck workers, likewise
	seq       uint64
	line      []byte // batch's, reused
	sender    sender
	// batched are the workers with connections waiting in their batch;
	// unlock sends them before mu is let go.
	batched []*worker
	closed  bool
	wg      sync.WaitGroup
	// timer runs check while watching: some worker has connections
	// unanswered.
	timer    *time.Timer
	watching bool
}

// New returns a Balancer with no listener and no worker. onStuck, if not
// nil, is told of each worker found stuck, from a goroutine of the
// Balancer's.
func New(log *slog.Logger, onStuck func(Stuck)) *Balancer {
	if log == nil {
		log = slog.Default()
	}
	return &Balancer{log: log, onStuck: onStuck, workers: map[int]*worker{}, acceptors: map[int]*acceptor{},
		passed: map[string]uint64{}, reclaimed: map[string]uint64{}}
}

// passed is a connection baton accepted, not yet taken by a worker.
type passed struct {
	fd      int
	peer    netip.AddrPort // the client's address, for the worker
	acc     *acceptor
	seq     uint64
	counted bool   // in Passed already (it was passed once)
	start   uint64 // where the message with its line begins in the worker's channel
}

// pauseFor is how long a worker that gave a connection back for a reason
// that passes (it was out of descriptors) is skipped for its listener.
const pauseFor = 100 * time.Millisecond

// acceptor accepts on one listening socket.
type acceptor struct {
	key    int // the caller's name for the socket
	name   string
	f      *os.File
	cursor int      // the next worker in order to try
	queue  []passed // accepted (or given back), waiting for a worker
	wake   chan struct{}
	done   chan struct{}
	warned time.Time           // when an accept error was last logged
	sa     unix.RawSockaddrAny // accept4's
}

// worker is one worker's channel.
type worker struct {
	pid        int
	f          *os.File // baton's end
	fd         int      // its number, for sendmsg under mu
	peer       int      // a copy of the worker's end, to see how far it read
	bound      time.Duration
	sent       uint64            // bytes sent on the channel
	batch      int               // the most connections it reads in one message (BATON_BATCH); 0: one
	batchBytes int               // the most bytes of one
	pending    []byte            // the lines of the batch not sent yet, which begins at sent
	fds        []int             // their descriptors
	watch      watch             // what the checks saw it leave unread (unread.go)
	listeners  map[int]string    // acceptor key -> the name the worker knows
	lines      map[int][]byte    // acceptor key -> its connection lines' start (wire.ConnStart)
	refused    map[int]bool      // keys whose listener it closed
	paused     map[int]time.Time // keys it gave a connection back for, until when
	unacked    []passed          // in the order sent
	inflight   map[int]int       // len(unacked) by key
	shut       bool              // sends no more
	exited     bool              // the process is gone
	stuck      bool              // found stuck: shut, and what it left unread taken back
	gone       bool
}

// Listen starts accepting on the stream socket fd (the Balancer uses a
// duplicate, made non-blocking: round-robin sockets are baton's alone),
// under key, for the workers that know it as name. Listening again on a
// key does nothing: every reload opens its configuration's listeners.
func (b *Balancer) Listen(key, fd int, name string) error {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return fmt.Errorf("roundrobin: listener %q: %w", name, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err))
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return fmt.Errorf("roundrobin: listener %q: %w", name, os.NewSyscallError("fcntl", err))
	}
	if err := setInherited(dup); err != nil {
		// The workers' connections go without keepalive probes, or
		// with Nagle's delay for a Go worker: worth a word, not a
		// refusal.
		b.log.Warn("round-robin: cannot set the listener's TCP options for its connections", "listener", name, "err", err)
	}
	a := &acceptor{key: key, name: name, f: os.NewFile(uintptr(dup), "baton-listener-"+name),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	b.mu.Lock()
	defer b.unlock()
	if b.closed {
		a.f.Close()
		return errors.New("roundrobin: closed")
	}
	if _, dup := b.acceptors[key]; dup {
		a.f.Close()
		return nil
	}
	b.acceptors[key] = a
	b.wg.Add(1)
	go b.accept(a)
	return nil
}

// Unlisten stops accepting on key's socket; what it accepted and no
// worker took is closed.
func (b *Balancer) Unlisten(key int) {
	b.mu.Lock()
	a := b.acceptors[key]
	if a != nil {
		b.retire(a)
	}
	b.unlock()
	if a != nil {
		// Not under mu: Close waits for the accept callback, which takes
		// it.
		a.f.Close()
	}
}

// retire takes a out of the Balancer, ends its goroutine and closes its
// queue; the caller closes a.f once mu is released. Under mu.
func (b *Balancer) retire(a *acceptor) {
	delete(b.acceptors, a.key)
	close(a.done)
	for _, p := range a.queue {
		unix.Close(p.fd)
	}
	a.queue = nil
}

// Channel makes a worker's channel; listeners are the sockets it takes
// connections from (key -> name); bound is how long it may leave one
// unread before it is stuck (0: never). The worker gets WorkerFd; call
// Attach with its pid once started, or Discard.
func (b *Balancer) Channel(listeners map[int]string, bound time.Duration) (*Channel, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("roundrobin: %w", os.NewSyscallError("socketpair", err))
	}
	// The copy of the worker's end shares its blocking mode with the
	// worker: it is only read with MSG_DONTWAIT.
	peer, err := unix.FcntlInt(uintptr(fds[1]), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		err = os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	} else if err = unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(peer)
		err = os.NewSyscallError("fcntl", err)
	}
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("roundrobin: %w", err)
	}
	return &Channel{ours: fds[0], peer: peer, WorkerFd: fds[1], listeners: listeners, bound: bound}, nil
}

// Channel is a worker's channel before the worker is attached.
type Channel struct {
	ours, peer int
	WorkerFd   int // the worker's end, for its process; close it once started
	listeners  map[int]string
	bound      time.Duration
}

// Discard closes a channel whose worker did not start.
func (c *Channel) Discard() {
	unix.Close(c.ours)
	unix.Close(c.peer)
	unix.Close(c.WorkerFd)
}

// Attach makes pid the worker at c's end. It gets connections once Route
// names it.
func (b *Balancer) Attach(pid int, c *Channel) {
	w := &worker{pid: pid, f: os.NewFile(uintptr(c.ours), "baton-conns"), fd: c.ours, peer: c.peer, bound: c.bound,
		listeners: c.listeners, lines: map[int][]byte{}, refused: map[int]bool{}, paused: map[int]time.Time{}, inflight: map[int]int{}}
	for key, name := range c.listeners {
		w.lines[key] = wire.ConnStart(name)
	}
	w.batchBytes = batchBytes(c.ours)
	b.mu.Lock()
	defer b.unlock()
	if b.closed {
		w.f.Close()
		unix.Close(w.peer)
		return
	}
	b.workers[pid] = w
	b.wg.Add(1)
	go b.readAnswers(w)
}

// Route makes ready (pids, in order) the workers that get connections. A
// worker that was ready and is not named any more is leaving: it is
// detached.
func (b *Balancer) Route(ready []int) {
	b.mu.Lock()
	defer b.unlock()
	was := b.order
	b.order = nil
	named := map[*worker]bool{}
	for _, pid := range ready {
		if w := b.workers[pid]; w != nil && !w.shut {
			b.order = append(b.order, w)
			named[w] = true
		}
	}
	for _, w := range was {
		if !named[w] {
			// Ready once, and no more: it is leaving.
			b.shutWorker(w)
		}
	}
	b.wakeAll()
}

// Detach sends pid no more connections (it is told to stop next): its
// side of the channel is shut down, so the worker reads every connection
// it was passed and then the end. Those it does not take come back.
func (b *Balancer) Detach(pid int) {
	b.mu.Lock()
	defer b.unlock()
	if w := b.workers[pid]; w != nil {
		b.shutWorker(w)
	}
}

// shutWorker stops sending to w. Under mu.
func (b *Balancer) shutWorker(w *worker) {
	if w.shut {
		return
	}
	b.sendBatch(w) // what it was dealt, it gets
	if w.shut {
		return // the send failed, and shut it
	}
	w.shut = true
	unix.Shutdown(w.fd, unix.SHUT_WR)
	for i, o := range b.order {
		if o == w {
			b.order = append(b.order[:i], b.order[i+1:]...)
			break
		}
	}
}

// Exited says pid is gone: the connections it did not take go to other
// workers once its answers already on the channel are read (its channel
// is shut down for reading: the reader sees them, then the end, even if
// a process it left behind still holds its end).
func (b *Balancer) Exited(pid int) {
	b.mu.Lock()
	defer b.unlock()
	if w := b.workers[pid]; w != nil && !w.gone {
		w.exited = true
		b.shutWorker(w)
		unix.Shutdown(w.fd, unix.SHUT_RD)
	}
}

// dropWorker forgets w and gives back what it did not take. Under mu.
func (b *Balancer) dropWorker(w *worker) {
	if w.gone {
		return
	}
	b.shutWorker(w)
	w.gone = true
	w.pending, w.fds = nil, nil // never sent: given back below with the rest
	delete(b.workers, w.pid)
	w.f.Close()
	unix.Close(w.peer)
	back := w.unacked
	w.unacked, w.inflight = nil, map[int]int{}
	for _, p := range back {
		b.giveBack(p)
	}
}

// giveBack passes p to another worker, or queues it until one has room.
// Under mu.
func (b *Balancer) giveBack(p passed) {
	if b.acceptors[p.acc.key] != p.acc {
		unix.Close(p.fd) // its listener is gone
		return
	}
	if len(p.acc.queue) > 0 || !b.pass(p.acc, p) {
		p.acc.queue = append(p.acc.queue, p)
	}
}

// flush passes the queued connections of a to workers with room; false
// if some are left. Under mu.
func (b *Balancer) flush(a *acceptor) bool {
	for len(a.queue) > 0 {
		if !b.pass(a, a.queue[0]) {
			return false
		}
		a.queue = a.queue[1:]
	}
	return true
}

// wakeAll passes what is queued and lets every acceptor waiting for room
// look again. Under mu.
func (b *Balancer) wakeAll() {
	for _, a := range b.acceptors {
		if b.flush(a) {
			select {
			case a.wake <- struct{}{}:
			default:
			}
		}
	}
}

// Passed returns how many connections each listener (by name) passed,
// each counted once however often it was passed on.
func (b *Balancer) Passed() map[string]uint64 {
	b.mu.Lock()
	defer b.unlock()
	return maps.Clone(b.passed)
}

// Reclaimed returns how many connections of each listener (by name) were
// taken back unread from stuck workers and passed on.
func (b *Balancer) Reclaimed() map[string]uint64 {
	b.mu.Lock()
	defer b.unlock()
	return maps.Clone(b.reclaimed)
}

// Close stops accepting, closes every connection no worker took and
// every channel, and waits for the Balancer's goroutines.
func (b *Balancer) Close() {
	b.mu.Lock()
	b.closed = true
	if b.watching && b.timer.Stop() {
		b.watching = false
		b.wg.Done() // the check that will not run
	}
	var files []*os.File
	for _, a := range b.acceptors {
		b.retire(a)
		files = append(files, a.f)
	}
	for _, w := range b.workers {
		b.dropWorker(w) // gives back to acceptors that are gone: closed
	}
	b.unlock()
	for _, f := range files {
		f.Close() // not under mu: see Unlisten
	}
	b.wg.Wait()
}

// next returns the worker a's next connection goes to, and its place in
// order: the first from a's cursor on that takes a's connections and has
// room; nil if none has. Under mu.
func (b *Balancer) next(a *acceptor) (*worker, int) {
	n := len(b.order)
	for i := range n {
		j := (a.cursor + i) % n
		w := b.order[j]
		if _, ok := w.listeners[a.key]; ok && !w.refused[a.key] && w.inflight[a.key] < Window && !b.paused(w, a.key) {
			return w, j
		}
	}
	return nil, 0
}

// paused reports whether w is skipped for key a while. Under mu.
func (b *Balancer) paused(w *worker, key int) bool {
	until, ok := w.paused[key]
	if ok && time.Now().After(until) {
		delete(w.paused, key)
		return false
	}
	return ok
}

// pass deals p to the next worker with room, into its batch: a worker
// that reads one connection per message gets it at once, one that reads
// batches when its batch is full or mu is let go. If the send fails, p
// goes to another worker (giveBack). False if no worker has room. Under
// mu.
func (b *Balancer) pass(a *acceptor, p passed) bool {
	w, j := b.next(a)
	if w == nil {
		return false
	}
	a.cursor = j + 1
	b.seq++
	p.seq = b.seq
	b.batch(w, a, p)
	return true
}

// dealt makes p, sent or in its batch, w's to answer for. Under mu.
func (b *Balancer) dealt(w *worker, a *acceptor, p passed) {
	if !p.counted {
		p.counted = true
		b.passed[a.name]++
	}
	w.unacked = append(w.unacked, p)
	w.inflight[a.key]++
	b.watchChannels()
}

// batch adds p to w's batch, sending the batch first if p's line would
// not fit in it, and after if it is full. Under mu.
func (b *Balancer) batch(w *worker, a *acceptor, p passed) {
	if len(w.fds) == 0 && w.batch > 1 {
		b.batched = append(b.batched, w) // sent by unlock if not before
	}
	b.line = wire.AppendConn(b.line[:0], w.lines[a.key], p.seq, p.peer)
	if len(w.pending) > 0 && len(w.pending)+len(b.line) > w.batchBytes {
		b.sendBatch(w)
		if w.shut {
			// It failed: p goes to another worker.
			b.giveBack(p)
			return
		}
	}
	p.start = w.sent // the batch's: the worker that reads any of it has every descriptor
	w.pending = append(w.pending, b.line...)
	w.fds = append(w.fds, p.fd)
	b.dealt(w, a, p)
	if len(w.fds) >= max(w.batch, 1) {
		b.sendBatch(w)
	}
}

// unlock sends every batch and lets mu go: no connection waits in a
// batch once the work that dealt it is done.
func (b *Balancer) unlock() {
	b.flushBatches()
	b.mu.Unlock()
}

// flushBatches sends every batch. Under mu.
func (b *Balancer) flushBatches() {
	for len(b.batched) > 0 {
		w := b.batched[0]
		b.batched = b.batched[1:]
		b.sendBatch(w) // a failed one's connections may join others' batches
	}
}

// sendBatch sends w's batch. If none of it went, its connections go to
// other workers; if some did, all its descriptors went: they are w's to
// answer for, whole line or not (a worker that gets half a line never
// answers it, and it comes back when it ends). Either way w, gone or so
// slow its buffer filled, gets no more. Under mu.
func (b *Balancer) sendBatch(w *worker) {
	if len(w.fds) == 0 {
		return
	}
	count := len(w.fds)
	n, err := b.sender.send(w.fd, w.pending, w.fds)
	w.sent += uint64(n)
	if err == nil && n < len(w.pending) {
		// Less than a message of room: an unfinished line cannot be
		// followed by another.
		err = fmt.Errorf("roundrobin: %d of %d bytes sent", n, len(w.pending))
	}
	w.pending, w.fds = w.pending[:0], w.fds[:0]
	if err == nil {
		return
	}
	b.log.Warn("round-robin: worker's channel failed: it gets no more connections", "pid", w.pid, "err", err)
	b.shutWorker(w)
	if n == 0 {
		// The batch is the last of what w was dealt.
		back := slices.Clone(w.unacked[len(w.unacked)-count:])
		for range count {
			w.take(len(w.unacked) - 1)
		}
		for _, p := range back {
			b.giveBack(p)
		}
	}
}

// batchBytes is the most bytes of a batch sent on the channel whose
// baton's end is fd: wire.BatchBytes, or less if the socket's send buffer
// is so small (net.core.wmem_default) that Linux would cut a message that
// long into pieces, the descriptors riding on the first, so that a
// worker's read would not hold the whole message.
func batchBytes(fd int) int {
	sndbuf, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		return 0 // a line at a time
	}
	// unix_stream_sendmsg's piece: half the send buffer, less 64.
	return min(wire.BatchBytes, sndbuf/2-64)
}

// accept runs a's loop: it accepts only while some worker has room, so
// that connections wait in the kernel's queue, not in baton.
func (b *Balancer) accept(a *acceptor) {
	defer b.wg.Done()
	rc, err := a.f.SyscallConn()
	if err != nil {
		b.log.Error("round-robin: cannot accept", "listener", a.name, "err", err)
		return
	}
	for {
		var full bool
		var acceptErr error
		stopped := false
		err := rc.Read(func(fd uintptr) bool {
			b.mu.Lock()
			defer b.unlock()
			if b.acceptors[a.key] != a {
				stopped = true // retired: its descriptor is being closed
				return true
			}
			if !b.flush(a) {
				full = true
				return true
			}
			for {
				if w, _ := b.next(a); w == nil {
					full = true
					return true
				}
				nfd, peer, err := accept4(fd, &a.sa)
				switch {
				case errors.Is(err, unix.EAGAIN):
					return false // wait until a connection comes
				case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
					continue
				case err != nil:
					acceptErr = err
					return true
				}
				p := passed{fd: nfd, peer: peer, acc: a}
				if !b.pass(a, p) {
					a.queue = append(a.queue, p)
				}
			}
		})
		if err != nil || stopped {
			return // closed
		}
		if acceptErr != nil {
			if errors.Is(acceptErr, unix.EINVAL) || errors.Is(acceptErr, unix.EBADF) {
				return // the socket was shut down
			}
			if time.Since(a.warned) > 10*time.Second {
				a.warned = time.Now()
				b.log.Warn("round-robin: accept failed", "listener", a.name, "err", acceptErr)
			}
			full = true // EMFILE and the like: wait a moment
		}
		if full {
			// Room comes with an answer or a new ready worker (wake), or
			// when a pause ends.
			t := time.NewTimer(pauseFor)
			select {
			case <-a.done:
				t.Stop()
				return
			case <-a.wake:
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// readAnswers reads w's answers until its channel ends. The answers of
// one read are acted on together.
func (b *Balancer) readAnswers(w *worker) {
	defer b.wg.Done()
	rc, err := w.f.SyscallConn()
	if err != nil {
		b.log.Error("round-robin: cannot read a worker's answers", "pid", w.pid, "err", err)
		b.mu.Lock()
		b.dropWorker(w)
		b.unlock()
		return
	}
	r := bufio.NewReaderSize(reader{rc}, maxLine)
	var got []wire.Answer
	var taken []int
	long := false
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = true
			continue
		}
		if err != nil {
			break
		}
		if long {
			long = false // the end of a line too long to be an answer
			continue
		}
		if a, ok := wire.ParseAnswer(line); ok {
			got = append(got, a)
		}
		if len(got) > 0 && !lineBuffered(r) {
			taken = b.answered(w, got, taken)
			got = got[:0]
		}
	}
	b.mu.Lock()
	b.dropWorker(w)
	b.unlock()
}

// lineBuffered reports whether r holds a whole line already.
func lineBuffered(r *bufio.Reader) bool {
	buf, _ := r.Peek(r.Buffered())
	return bytes.IndexByte(buf, '\n') >= 0
}

// answered acts on answers of w's, and closes baton's copies of the
// connections w took, appended to taken (returned, emptied, for reuse).
func (b *Balancer) answered(w *worker, got []wire.Answer, taken []int) []int {
	b.mu.Lock()
	room := false
	for _, a := range got {
		var ok bool
		ok, taken = b.answer(w, a, taken)
		room = room || ok
	}
	if room {
		b.wakeAll() // it has room again
	}
	b.unlock()
	// Not under mu: the accept loop goes on meanwhile.
	for _, fd := range taken {
		closeFd(fd)
	}
	return taken[:0]
}

// answer acts on one answer of w's; true if it was about one of w's
// connections. A connection w took is appended to taken, for the caller
// to close. Under mu.
func (b *Balancer) answer(w *worker, a wire.Answer, taken []int) (bool, []int) {
	i := -1
	switch a.Cmd {
	case "NODE_HANDLE_ACK", "NODE_HANDLE_NACK":
		if len(w.unacked) > 0 {
			i = 0
		}
	case "BATON_ACK", "BATON_NACK":
		if !a.HasSeq {
			return false, taken
		}
		i = w.find(a.Seq)
	case "BATON_BATCH":
		b.sendBatch(w) // what it was dealt goes as it was dealt
		w.batch = min(max(a.Max, 0), wire.MaxBatch)
		return false, taken
	default:
		return false, taken
	}
	if i < 0 || w.unacked[i].start >= w.sent {
		// Not one of ours, or one not sent yet (in a batch that goes
		// when mu is let go): ignored.
		return false, taken
	}
	p := w.take(i)
	switch {
	case a.Cmd == "BATON_ACK" || a.Cmd == "NODE_HANDLE_ACK":
		taken = append(taken, p.fd)
	case a.Closed:
		w.refused[p.acc.key] = true
		b.giveBack(p)
	default:
		w.paused[p.acc.key] = time.Now().Add(pauseFor)
		b.giveBack(p)
	}
	return true, taken
}

// find returns the index of connection seq in w.unacked, -1 if none.
func (w *worker) find(seq uint64) int {
	return slices.IndexFunc(w.unacked, func(p passed) bool { return p.seq == seq })
}

// take removes w.unacked[i]: answered, or taken back.
func (w *worker) take(i int) passed {
	p := w.unacked[i]
	w.unacked = slices.Delete(w.unacked, i, i+1)
	w.inflight[p.acc.key]--
	return p
}
