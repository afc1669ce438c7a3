package supervisor

import (
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/batonhq/baton/internal/linering"
)

func TestPriorityPrefix(t *testing.T) {
	for in, want := range map[string]struct {
		p    journal.Priority
		text string
	}{
		"<3>disk full": {journal.PriErr, "disk full"},
		"<7>":          {journal.PriDebug, ""},
		"plain":        {journal.PriInfo, "plain"},
		"<8>not one":   {journal.PriInfo, "<8>not one"},
		"<a>nor this":  {journal.PriInfo, "<a>nor this"},
		"<3":           {journal.PriInfo, "<3"},
	} {
		if p, text := priority(in); p != want.p || text != want.text {
			t.Errorf("priority(%q) = %d, %q; want %d, %q", in, p, text, want.p, want.text)
		}
	}
}

// A journald that takes nothing costs baton at most the queue's bytes,
// the rest is dropped and counted, and baton's exit waits for it only a
// moment.
func TestJournalSinkBounded(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	j := startJournalSink(func(string, journal.Priority, map[string]string) error {
		<-block
		return nil
	})
	line := strings.Repeat("x", 64<<10)
	for range 1000 { // 64 MB offered
		j.line(linering.Line{Text: line})
	}
	if q := j.queued.Load(); q > journalQueueBytes {
		t.Errorf("%d bytes wait for journald, want at most %d", q, journalQueueBytes)
	}
	if d := j.dropped.Load(); d < 1000-journalQueueBytes/(64<<10)-2 {
		t.Errorf("%d of 1000 lines dropped", d)
	}
	done := make(chan struct{})
	go func() { j.close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * journalCloseWait):
		t.Fatal("close waits for a journald that takes nothing")
	}
}
