package control

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// reference is the protocol's documentation for users.
const reference = "../../docs/control.md"

// Every row says how baton answers it in one way, and a command of the
// command line says how it shows the answer.
func TestCommandsAreWhole(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Commands {
		if c.Name == "" || seen[c.Name] || Lookup(c.Name) != c {
			t.Errorf("command %q: empty or named twice", c.Name)
		}
		seen[c.Name] = true
		switch {
		case c.Event != nil && c.Read != nil:
			t.Errorf("%s: both an event and a read", c.Name)
		case (c.Event != nil) != (c.Print != nil):
			t.Errorf("%s: an outcome needs both Event and Print", c.Name)
		case c.Summary == "":
			continue // the protocol only
		case c.Help == "":
			t.Errorf("%s: no help", c.Name)
		case c.View == Outcome && c.Event == nil, c.View == Table && c.Read == nil, c.View == Lines && (c.Event != nil || c.Read != nil):
			t.Errorf("%s: view %d does not fit how it is answered", c.Name, c.View)
		case c.Arg != nil && c.Usage == "":
			t.Errorf("%s: takes an argument its usage does not name", c.Name)
		}
	}
}

// docs/control.md's table of commands names every command, in the
// table's order, and no other; the answer to an unknown command it quotes
// is the one baton gives; and each request it shows is one baton takes.
func TestReferenceNamesEveryCommand(t *testing.T) {
	b, err := os.ReadFile(reference)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)

	var want, got []string
	for _, c := range Commands {
		want = append(want, c.Name)
	}
	inTable := false
	for line := range strings.Lines(doc) {
		cells := strings.Split(line, "|")
		switch {
		case !strings.HasPrefix(line, "|") || len(cells) < 3:
			inTable = false
		case strings.TrimSpace(cells[1]) == "`command`":
			inTable = true
		case inTable && strings.Trim(cells[1], "-: ") != "":
			got = append(got, strings.Trim(strings.TrimSpace(cells[1]), "`"))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s: the `command` table names %v, want %v", reference, got, want)
	}

	_, _, err = ParseRequest([]byte(`{"command":"x"}`))
	if flat := strings.Join(strings.Fields(doc), " "); err == nil || !strings.Contains(flat, "`"+err.Error()+"`") {
		t.Errorf("%s does not quote the answer to an unknown command, `%v`", reference, err)
	}

	fences := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(doc, -1)
	n := 0
	for _, f := range fences {
		for line := range strings.Lines(f[1]) {
			if !strings.Contains(line, `"command"`) {
				continue
			}
			n++
			if _, _, err := ParseRequest([]byte(line)); err != nil {
				t.Errorf("%s shows the request %s, which baton refuses: %v", reference, strings.TrimSpace(line), err)
			}
		}
	}
	if n == 0 {
		t.Errorf("%s shows no request", reference)
	}
}

// scale's count: an absolute one out of 1..1024 is wrong whatever runs
// (the command line's error); a relative one is the Machine's to judge.
func TestParseScale(t *testing.T) {
	for _, tt := range []struct {
		in       string
		n        int
		relative bool
		err      string
	}{
		{"4", 4, false, ""},
		{"+2", 2, true, ""},
		{"-5", -5, true, ""},
		{"-2000", -2000, true, ""},
		{"0", 0, false, "0 workers: baton keeps 1 to 1024 (baton stop stops it)"},
		{"1025", 0, false, "1025 workers: baton keeps 1 to 1024"},
		{"abc", 0, false, `"abc" is not a count of workers: want N, +N or -N (baton scale 4, +1 or -1)`},
		{"", 0, false, `"" is not a count of workers: want N, +N or -N (baton scale 4, +1 or -1)`},
	} {
		n, relative, err := parseScale(tt.in)
		if n != tt.n || relative != tt.relative || (err == nil) != (tt.err == "") || err != nil && err.Error() != tt.err {
			t.Errorf("parseScale(%q) = %d, %v, %v; want %d, %v, %q", tt.in, n, relative, err, tt.n, tt.relative, tt.err)
		}
	}
}
