package roundrobin

import (
	"errors"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// checkEvery is how often the channels of the workers with unanswered
// connections are looked at: a stuck worker is found at most two of
// these past its bound.
const checkEvery = 100 * time.Millisecond

// Stuck is a worker that left a connection unread on its channel for its
// bound (unread.go). The Balancer passes it no more connections, and
// passed on to other workers those it had not begun to read.
type Stuck struct {
	PID int
	// Unread is how long its oldest unread connection was seen unread:
	// its bound, or a little more.
	Unread time.Duration
	// TakenBack counts the connections passed on.
	TakenBack int
}

// watchChannels arms the check unless it is armed. Under mu.
func (b *Balancer) watchChannels() {
	if b.watching || b.closed {
		return
	}
	b.watching = true
	b.wg.Add(1)
	if b.timer == nil {
		b.timer = time.AfterFunc(checkEvery, b.check)
		return
	}
	b.timer.Reset(checkEvery)
}

// check looks how far each worker with unanswered connections has read
// its channel, and takes back what the stuck ones left unread. It comes
// again while connections are unanswered.
func (b *Balancer) check() {
	defer b.wg.Done()
	b.mu.Lock()
	b.watching = false
	if b.closed {
		b.unlock()
		return
	}
	now := time.Now()
	var stuck []Stuck
	again := false
	for _, w := range b.workers {
		if w.exited || w.stuck || len(w.unacked) == 0 {
			w.watch = watch{}
			continue
		}
		again = true
		inq, err := unix.IoctlGetInt(w.peer, unix.SIOCINQ)
		if err != nil || inq < 0 || uint64(inq) > w.sent {
			continue
		}
		unread, ok := w.watch.observe(now, w.bound, w.unacked, w.sent-uint64(inq))
		if !ok {
			continue
		}
		w.stuck = true
		b.shutWorker(w)
		stuck = append(stuck, Stuck{PID: w.pid, Unread: unread, TakenBack: b.reclaim(w)})
	}
	if again {
		b.watchChannels()
	}
	if len(stuck) > 0 {
		b.wakeAll()
	}
	b.unlock()
	for _, s := range stuck {
		b.log.Warn("round-robin: worker left connections unread: they go to other workers, it gets no more", "pid", s.PID,
			"unread", s.Unread.Round(time.Millisecond), "taken_back", s.TakenBack)
		if b.onStuck != nil {
			b.onStuck(s)
		}
	}
}

// reclaim reads w's end of its channel as w would, and passes each
// connection whose descriptor it took to another worker: w can no longer
// read it. What w read already stays w's. It returns how many it passed
// on. Under mu, once w is shut: nothing more comes.
func (b *Balancer) reclaim(w *worker) int {
	buf := make([]byte, 64<<10) // holds a whole line with room to spare
	n := 0
	for {
		// Without room for them, the descriptors a read takes are closed
		// by the kernel (baton passes its own copy), and it says so with
		// MSG_CTRUNC.
		got, _, flags, _, err := unix.Recvmsg(w.peer, buf, nil, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || got <= 0 {
			return n // EAGAIN: all read; or the end
		}
		if flags&unix.MSG_CTRUNC == 0 {
			continue // the rest of a line w began to read
		}
		seq, ok := takenBack(buf[:got])
		if !ok {
			continue
		}
		// The read took the descriptors of the message that ends it:
		// that connection's batch, all of it.
		i := w.find(seq)
		if i < 0 {
			continue
		}
		start := w.unacked[i].start
		for _, p := range slices.Clone(w.unacked) {
			if p.start == start {
				w.take(w.find(p.seq))
				b.reclaimed[p.acc.name]++
				b.giveBack(p)
				n++
			}
		}
	}
}
