package roundrobin

import (
	"bytes"
	"slices"
	"time"

	"github.com/batonhq/baton/internal/wire"
)

// A worker is stuck when it leaves a connection it was passed unread on
// its channel for its bound (worker.channel_timeout). Unanswered is not
// enough: a busy worker may put off answering (its listener holds what
// Accept has not taken yet), but a worker that reads its channel has the
// descriptor, and a connection the worker has read cannot be passed to
// another without two workers serving it. So baton keeps a copy of the
// worker's end of the channel, whose count of unread bytes (SIOCINQ)
// says how far the worker has read. Every message baton sent (one
// connection's line, or a batch of them, with their descriptors) begins
// at an offset it knows, and a worker that begins to read a message has
// all its descriptors: so the first unanswered connection whose message
// begins at or past that point is the oldest the worker has not begun to
// read.
// The decisions below are pure; stuck.go looks at the channels (every
// checkEvery, while connections are unanswered: one ioctl per worker,
// nothing per connection) and takes the connections back.

// firstUnread returns the oldest connection of unacked (in the order
// sent) whose message the worker has not begun to read, once it has read
// consumed bytes of its channel.
func firstUnread(unacked []passed, consumed uint64) (passed, bool) {
	i := slices.IndexFunc(unacked, func(p passed) bool { return p.start >= consumed })
	if i < 0 {
		return passed{}, false
	}
	return unacked[i], true
}

// watch is what the checks remember of a worker's channel: where the
// line of its oldest unread connection begins, and when a check first
// saw it unread (zero: none).
type watch struct {
	start uint64
	since time.Time
}

// observe takes one check's look at a worker's channel at now: the worker
// has read consumed bytes of it, and unacked are its unanswered
// connections. It returns how long its oldest unread connection has been
// seen unread, and whether that has reached bound (never, for a bound of
// 0). The time is counted from the first check that saw it, so it is
// never more than the connection waited.
func (wt *watch) observe(now time.Time, bound time.Duration, unacked []passed, consumed uint64) (time.Duration, bool) {
	p, ok := firstUnread(unacked, consumed)
	if !ok {
		*wt = watch{}
		return 0, false
	}
	if wt.since.IsZero() || p.start != wt.start {
		*wt = watch{start: p.start, since: now}
		return 0, false
	}
	d := now.Sub(wt.since)
	return d, bound > 0 && d >= bound
}

// takenBack returns a connection whose descriptor a read from the
// worker's end of its channel took, given the data of a read that came
// with descriptors: the last. A read ends with the message that carries
// the descriptors (one sendmsg: a line, or a batch of lines no longer
// than wire.BatchBytes, well within the read's buffer), and may begin
// with the rest of a message the worker began to read, whose descriptors
// the worker has: so the last line is the message's, and the others of
// its batch are those that began with it.
func takenBack(data []byte) (seq uint64, ok bool) {
	body, ended := bytes.CutSuffix(data, []byte{'\n'})
	if !ended {
		return 0, false
	}
	c, ok := wire.ParseConn(body[bytes.LastIndexByte(body, '\n')+1:])
	return c.Seq, ok
}
