package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/control"
)

// baton logs prints a worker's line with tabs as they are and everything
// that could drive the terminal or reorder the text escaped, as baton
// status shows it (console.Printable).
func TestLogLine(t *testing.T) {
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]string{
		"plain\ttext":               "plain\ttext",
		"\x1b]0;owned\x07\x1b[2Jok": `\x1b]0;owned\a\x1b[2Jok`,
		"c1 \u009b31m":              `c1 \u009b31m`,
		"raw \x9b31m":               `raw \x9b31m`,
		"rlo \u202eevil \u2066":     `rlo \u202eevil \u2066`,
		"ünïcode ✓":                 "ünïcode ✓",
	} {
		l := control.LogLine{Time: at, Slot: 1, PID: 42, Stream: "stderr", Line: in}
		if got, want := logLine(l), "2026-12-01T12:00:00.000Z [worker 1 pid 42 stderr] "+want; got != want {
			t.Errorf("logLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// --json output carries a worker's text as \u escapes: the same value,
// nothing for a terminal to act on.
func TestJSONOut(t *testing.T) {
	var b strings.Builder
	line := control.LogLine{Slot: 1, PID: 42, Stream: "stdout", Line: "rlo \u202eevil \u009b31m"}
	if err := json.NewEncoder(jsonOut{&b}).Encode(line); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"rlo \u202eevil \u009b31m"`) {
		t.Errorf("--json wrote %q", b.String())
	}
	var back control.LogLine
	if err := json.Unmarshal([]byte(b.String()), &back); err != nil || back.Line != line.Line {
		t.Errorf("--json's line reads back as %q, %v; want %q", back.Line, err, line.Line)
	}
}

// Every command of the control protocol with a summary is a command of
// baton's, listed in its usage, whose -h says what it does; the others
// are not.
func TestEveryControlCommandRuns(t *testing.T) {
	for _, c := range control.Commands {
		var stdout, stderr strings.Builder
		code := run([]string{c.Name, "-h"}, &stdout, &stderr)
		listed := strings.Contains(usageText, fmt.Sprintf("\n  %-8s %s\n", c.Name, c.Summary))
		switch {
		case c.Summary == "":
			if code != exitUsage || !strings.HasPrefix(stderr.String(), "baton: unknown command") {
				t.Errorf("baton %s -h: exit %d, %q; want an unknown command", c.Name, code, stderr.String())
			}
		case !listed:
			t.Errorf("baton's usage does not list %s:\n%s", c.Name, usageText)
		case code != exitOK || !strings.HasPrefix(stderr.String(), "usage: baton "+c.Name+" ") || !strings.Contains(stderr.String(), "\n\n"+c.Help+"\n\n"):
			t.Errorf("baton %s -h: exit %d, %q; want its usage and help", c.Name, code, stderr.String())
		}
	}
}

// A wrong --slot or --stream of baton logs is a usage error, said before
// any baton is looked for.
func TestLogsFilterFlags(t *testing.T) {
	for _, c := range []struct{ args, want string }{
		{"--stream err", `baton logs: stream "err": want stdout or stderr` + "\n"},
		{"--slot -1", "baton logs: slot -1: want a slot number, 0 or more, as baton status shows it\n"},
		{"--slot one", `baton logs: invalid value "one" for flag -slot: want a slot number, as baton status shows it (baton logs -h lists its flags)` + "\n"},
	} {
		var stdout, stderr strings.Builder
		code := run(append([]string{"logs", "--control", "/nonexistent"}, strings.Fields(c.args)...), &stdout, &stderr)
		if code != exitUsage || stderr.String() != c.want {
			t.Errorf("baton logs %s: exit %d, %q; want exit %d, %q", c.args, code, stderr.String(), exitUsage, c.want)
		}
	}
}
