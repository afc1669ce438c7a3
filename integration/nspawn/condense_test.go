package nspawn

import (
	"fmt"
	"strings"
	"testing"
)

// A journal with a long goroutine dump keeps its first lines, baton's and
// systemd's lines from the middle, and its end; a short one is unchanged.
func TestCondense(t *testing.T) {
	short := "a\nb\nc\n"
	if got := condense(short); got != short {
		t.Errorf("a short journal became %q", got)
	}
	var lines []string
	for i := range 1000 {
		switch i {
		case 400:
			lines = append(lines, `[1.0] m baton[88]: time=x level=INFO msg="self-upgrade: starting"`)
		case 500:
			lines = append(lines, "[2.0] m systemd[1]: app.service: Watchdog timeout (limit 2s)!")
		default:
			lines = append(lines, fmt.Sprintf("[3.0] m baton[88]: goroutine frame %d", i))
		}
	}
	got := strings.Split(condense(strings.Join(lines, "\n")), "\n")
	want := 100 + 2 + 3 + 200 // head, the two lines, three gaps, tail
	if len(got) != want {
		t.Fatalf("%d lines kept, want %d:\n%s", len(got), want, strings.Join(got, "\n"))
	}
	for _, l := range []string{lines[0], lines[99], lines[400], lines[500], lines[800], lines[999], "  (299 lines left out)"} {
		if !strings.Contains(strings.Join(got, "\n"), l) {
			t.Errorf("line %q left out", l)
		}
	}
	if strings.Contains(strings.Join(got, "\n"), "frame 100\n") {
		t.Error("a dump line from the middle was kept")
	}
}
