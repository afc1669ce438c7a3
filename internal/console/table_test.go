package console

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/batonhq/baton/internal/control"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// at is the fixed clock of the golden states.
var at = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func serving() *control.Status {
	return &control.Status{
		At: at, PID: 4100, Version: "0.2.0", Started: at.Add(-3 * time.Hour), Phase: "running", Ready: true, Generation: 3, Balance: "round-robin",
		Listeners:  []control.StatusListener{{Name: "http", Address: "tcp://127.0.0.1:8080"}, {Name: "admin", Address: "unix:///run/app/admin.sock"}},
		Budget:     control.StatusBudget{Used: 2, Limit: 10, WindowSeconds: 60},
		LastReload: &control.StatusReload{At: at.Add(-5 * time.Minute), OK: true},
		Workers: []control.StatusWorker{
			{Slot: 0, PID: 4242, Generation: 3, State: "ready", Started: at.Add(-5 * time.Minute), Restarts: 2, CPUSeconds: 30, RSSBytes: 12 << 20, Status: "serving 40 req/s"},
			{Slot: 1, PID: 4243, Generation: 3, State: "ready", Started: at.Add(-90 * time.Second), CPUSeconds: 9, RSSBytes: 900 << 10},
		},
	}
}

func TestTable(t *testing.T) {
	tests := map[string]func() (*control.Status, *control.Status){
		"serving": func() (*control.Status, *control.Status) { return serving(), nil },
		"reloading": func() (*control.Status, *control.Status) {
			st := serving()
			st.Phase, st.LastReload = "reloading", &control.StatusReload{At: at.Add(-26 * time.Hour), Error: "supervisor: reload rolled back: worker 1 (pid 4000) exited before it was ready: exit status 1"}
			st.Workers = append(st.Workers,
				control.StatusWorker{Slot: 0, PID: 4300, Generation: 4, State: "starting", Started: at.Add(-2 * time.Second), RSSBytes: 3 << 20},
				control.StatusWorker{Slot: 1, PID: 4301, Generation: 4, State: "starting", Started: at.Add(-2 * time.Second), Status: "warming\nup\tcaches"})
			st.Workers[1].State = "draining"
			return st, nil
		},
		"gave-up": func() (*control.Status, *control.Status) {
			st := serving()
			st.Budget = control.StatusBudget{Used: 10, Limit: 10, WindowSeconds: 60, Spent: true}
			st.Workers = st.Workers[:1]
			return st, nil
		},
		"stopping": func() (*control.Status, *control.Status) {
			st := serving()
			st.Phase, st.Ready, st.LastReload = "stopping", false, nil
			for i := range st.Workers {
				st.Workers[i].State = "stopping"
			}
			return st, nil
		},
		"lame-duck": func() (*control.Status, *control.Status) {
			st := serving()
			st.Phase, st.Ready, st.StopIn = "lame duck", false, 2.4
			return st, nil
		},
		// Under systemd, with a configuration file: which baton this is.
		"unit": func() (*control.Status, *control.Status) {
			st := serving()
			st.Unit, st.Config = "app.service", "/etc/app/baton.toml"
			return st, nil
		},
		// worker.balance = "auto": the mode it chose.
		"auto": func() (*control.Status, *control.Status) {
			st := serving()
			st.Balance, st.BalanceAuto = "reuseport", "every TCP listener can have a socket per worker"
			return st, nil
		},
		// baton scale 2 with worker.count = 4: the count holds across reloads.
		"scaled": func() (*control.Status, *control.Status) {
			st := serving()
			st.TargetWorkers, st.ConfigWorkers = 2, 4
			return st, nil
		},
		"no-workers": func() (*control.Status, *control.Status) {
			st := serving()
			st.Phase, st.Ready, st.Generation, st.LastReload, st.Workers = "starting", false, 0, nil, nil
			return st, nil
		},
		// --watch: cpu over the second since the previous sample.
		"watch": func() (*control.Status, *control.Status) {
			prev := serving()
			prev.At = at.Add(-time.Second)
			prev.Workers[0].CPUSeconds = 29.5
			return serving(), prev
		},
	}
	for name, state := range tests {
		t.Run(name, func(t *testing.T) {
			st, prev := state()
			var b bytes.Buffer
			if err := Table(&b, st, prev, st.At); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/console -update to write it)", err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("got:\n%s\nwant (%s):\n%s", b.Bytes(), golden, want)
			}
		})
	}
}

// Text from outside (a worker's STATUS=, a reload's error, a listener's
// name) reaches the terminal with no character that could start an escape
// sequence or reorder the text, and no byte that is not UTF-8: each shows
// as a visible escape instead.
func TestTableEscapes(t *testing.T) {
	st := serving()
	st.Listeners[0].Name = "http\u202e"
	st.LastReload = &control.StatusReload{At: at.Add(-time.Minute), Error: "bad \x1b]0;title\x07 \u009b2J \xe2\x80"}
	st.Workers[0].Status = "\u009b31mred\u202eevil\u2066 \x9b \u200f\r\u2028"
	var b bytes.Buffer
	if err := Table(&b, st, nil, st.At); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !utf8.ValidString(out) {
		t.Errorf("the table has bytes that are not UTF-8:\n%q", out)
	}
	var passed []string
	for _, r := range out {
		if r != '\n' && unsafeRune(r) {
			passed = append(passed, fmt.Sprintf("%U", r))
		}
	}
	if len(passed) > 0 {
		t.Errorf("the table passes %s:\n%q", strings.Join(passed, " "), out)
	}
	for _, want := range []string{`http\u202e`, `\x1b]0;title\a`, `\u009b2J \xe2\x80`, `\u009b31mred\u202eevil\u2066 \x9b \u200f \u2028`} {
		if !strings.Contains(out, want) {
			t.Errorf("the table does not show %s:\n%q", want, out)
		}
	}
}

// unsafeRune reports whether r may not reach a terminal as it is: a C0 or
// C1 control or DEL (Cc), a format character such as the bidi controls
// (Cf), or a line or paragraph separator (Zl, Zp).
func unsafeRune(r rune) bool {
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)
}

// A long STATUS= is cut at 60 characters as shown, between two escapes
// rather than inside one.
func TestOneLineCuts(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{strings.Repeat("x", 60), strings.Repeat("x", 60)},
		{strings.Repeat("x", 61), strings.Repeat("x", 57) + "..."},
		{strings.Repeat("x", 53) + "\u202e" + "yy", strings.Repeat("x", 53) + "..."},
		{strings.Repeat("x", 51) + "\u202e" + "yyyy", strings.Repeat("x", 51) + `\u202e` + "..."},
		{"a\tb\nc\r\u202e", `a b c \u202e`},
	} {
		if got := oneLine(tt.in); got != tt.want {
			t.Errorf("oneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
