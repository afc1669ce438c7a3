package supervisor

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/batonhq/baton/internal/linering"
)

// When baton's standard error is the journal (JOURNAL_STREAM names it),
// the workers' lines go to journald natively, each with fields that say
// whose it is (journalctl -u app BATON_WORKER=1), instead of through
// baton's own stream with a prefix. Like logbuf for stderr, a bounded
// queue and one writer goroutine keep a slow journald from stalling the
// workers: what does not fit is dropped and counted.

// journalQueue is how many lines may wait for journald.
const journalQueue = 4096

type journalSink struct {
	lines   chan linering.Line
	dropped atomic.Int64
	done    sync.WaitGroup
}

func newJournalSink() *journalSink {
	j := &journalSink{lines: make(chan linering.Line, journalQueue)}
	j.done.Add(1)
	go func() {
		defer j.done.Done()
		for l := range j.lines {
			prio, text := priority(l.Text)
			if journal.Send(text, prio, map[string]string{
				"BATON_WORKER":     strconv.Itoa(l.Slot),
				"BATON_GENERATION": strconv.Itoa(l.Generation),
				"WORKER_PID":       strconv.Itoa(l.PID),
				"BATON_STREAM":     l.Stream,
			}) != nil {
				j.dropped.Add(1)
			}
		}
	}()
	return j
}

// send queues a line, or drops it when the queue is full.
func (j *journalSink) send(l linering.Line) {
	select {
	case j.lines <- l:
	default:
		j.dropped.Add(1)
	}
}

// close sends what is queued and stops. No send may follow.
func (j *journalSink) close() {
	close(j.lines)
	j.done.Wait()
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
