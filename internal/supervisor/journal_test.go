package supervisor

import (
	"maps"
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
		j.line(linering.Line{Text: line}, "app")
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

// A worker's line reaches journald as the worker's (journalctl shows
// "app[4242]"), with the fields that say which worker it is.
func TestJournalFields(t *testing.T) {
	got := make(chan map[string]string, 1)
	var prio journal.Priority
	var text string
	j := startJournalSink(func(m string, p journal.Priority, vars map[string]string) error {
		text, prio = m, p
		got <- vars
		return nil
	})
	j.line(linering.Line{Slot: 1, Generation: 3, PID: 4242, Stream: "stderr", Text: "<4>slow disk"}, "app")
	vars := <-got
	j.close()
	want := map[string]string{"SYSLOG_IDENTIFIER": "app", "SYSLOG_PID": "4242", "BATON_WORKER": "1",
		"BATON_GENERATION": "3", "WORKER_PID": "4242", "BATON_STREAM": "stderr"}
	if !maps.Equal(vars, want) || text != "slow disk" || prio != journal.PriWarning {
		t.Errorf("sent %q at %d with %v, want %q at %d with %v", text, prio, vars, "slow disk", journal.PriWarning, want)
	}
}
