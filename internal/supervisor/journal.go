package supervisor

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/batonhq/baton/internal/linering"
)

// When baton's standard error is the journal (JOURNAL_STREAM names it),
// the workers' lines go to journald natively, each with fields that say
// whose it is (journalctl -u app BATON_WORKER=1), instead of through
// baton's own stream with a prefix. Like logbuf for stderr, a bounded
// queue and one writer goroutine keep a slow journald from stalling the
// workers: what does not fit is dropped and counted.

// Bounds on what waits for journald: lines and bytes; and how long baton
// waits at exit for the queue to be sent.
const (
	journalQueue      = 4096
	journalQueueBytes = 1 << 20
	journalCloseWait  = 2 * time.Second
)

// journalLine is a worker's line and the name journalctl shows it under.
type journalLine struct {
	linering.Line
	// ident is the worker program's base name (SYSLOG_IDENTIFIER).
	ident string
}

type journalSink struct {
	lines   chan journalLine
	queued  atomic.Int64 // bytes of text in lines
	dropped atomic.Int64
	done    chan struct{}
	// send is journal.Send; tests give another.
	send func(message string, priority journal.Priority, vars map[string]string) error
}

func newJournalSink() *journalSink { return startJournalSink(journal.Send) }

func startJournalSink(send func(string, journal.Priority, map[string]string) error) *journalSink {
	j := &journalSink{lines: make(chan journalLine, journalQueue), done: make(chan struct{}), send: send}
	go func() {
		defer close(j.done)
		for l := range j.lines {
			j.queued.Add(-int64(len(l.Text)))
			prio, text := priority(l.Text)
			if j.send(text, prio, journalFields(l)) != nil {
				j.dropped.Add(1)
			}
		}
	}()
	return j
}

// journalFields are the fields a worker's line is sent with: whose it is
// for a query (journalctl -u app BATON_WORKER=1), and SYSLOG_IDENTIFIER
// and SYSLOG_PID so that journalctl shows it as the worker's, "app[4242]",
// not as baton's.
func journalFields(l journalLine) map[string]string {
	pid := strconv.Itoa(l.PID)
	return map[string]string{
		"SYSLOG_IDENTIFIER": l.ident,
		"SYSLOG_PID":        pid,
		"BATON_WORKER":      strconv.Itoa(l.Slot),
		"BATON_GENERATION":  strconv.Itoa(l.Generation),
		"WORKER_PID":        pid,
		"BATON_STREAM":      l.Stream,
	}
}

// line queues a worker's line, ident the program's name, or drops it when
// the queue is full (in lines or bytes): a journald that does not read
// holds up no worker.
func (j *journalSink) line(l linering.Line, ident string) {
	if j.queued.Add(int64(len(l.Text))) > journalQueueBytes {
		j.queued.Add(-int64(len(l.Text)))
		j.dropped.Add(1)
		return
	}
	select {
	case j.lines <- journalLine{l, ident}:
	default:
		j.queued.Add(-int64(len(l.Text)))
		j.dropped.Add(1)
	}
}

// close sends what is queued, waiting at most journalCloseWait: a
// journald that does not read must not keep baton from exiting. No line
// may follow.
func (j *journalSink) close() {
	close(j.lines)
	select {
	case <-j.done:
	case <-time.After(journalCloseWait):
	}
}

// priority reads a line's sd-daemon level prefix ("<3>disk full"), as
// journald does for a stream, and returns the level and the rest;
// without one, info.
func priority(s string) (journal.Priority, string) {
	if len(s) >= 3 && s[0] == '<' && s[2] == '>' && s[1] >= '0' && s[1] <= '7' {
		return journal.Priority(s[1] - '0'), s[3:]
	}
	return journal.PriInfo, s
}
