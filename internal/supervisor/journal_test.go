package supervisor

import (
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
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
