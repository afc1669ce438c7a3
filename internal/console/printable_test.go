package console

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestPrintable(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"plain", "serving 40 req/s", "serving 40 req/s"},
		{"tab kept", "a\tb", "a\tb"},
		{"unicode kept", "ünïcode ✓ 日本 👍", "ünïcode ✓ 日本 👍"},
		{"backslash kept", `C:\dir \x1b`, `C:\dir \x1b`},
		{"C0", "\x1b[2J\x07\x00", `\x1b[2J\a\x00`},
		{"newline and return", "a\nb\rc", `a\nb\rc`},
		{"DEL", "\x7f", `\x7f`},
		{"C1 CSI", "\u009b31m", `\u009b31m`},
		{"C1 all", "\u0080\u008d\u009f", `\u0080\u008d\u009f`},
		{"no-break space kept", "a\u00a0b", "a\u00a0b"},
		{"bidi embeddings and overrides", "\u202a\u202b\u202c\u202d\u202e", `\u202a\u202b\u202c\u202d\u202e`},
		{"bidi isolates", "\u2066\u2067\u2068\u2069", `\u2066\u2067\u2068\u2069`},
		{"bidi marks", "\u200e\u200f\u061c", `\u200e\u200f\u061c`},
		{"line and paragraph separators", "\u2028\u2029", `\u2028\u2029`},
		{"zero width", "a\u200bb\ufeff", `a\u200bb\ufeff`},
		{"astral format", "\U000e0001", `\U000e0001`},
		{"raw 8-bit CSI", "\x9b31m", `\x9b31m`},
		{"cut sequence", "ok \xe2\x80", `ok \xe2\x80`},
		{"overlong", "\xc0\xaf", `\xc0\xaf`},
		{"replacement char kept", "\ufffd", "\ufffd"},
		{"empty", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Printable(tt.in); got != tt.want {
				t.Errorf("Printable(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// EscapeJSON keeps the value and the layout and leaves nothing for a
// terminal to act on.
func TestEscapeJSON(t *testing.T) {
	value := map[string]any{
		"status": "\u009b31mred\u202eevil\u2066 \u200f\u2028 \x7f \U000e0001 \x1b[2J \x9b",
		"plain":  "ünïcode ✓ <tag> & \\",
		"n":      3,
	}
	in, err := json.MarshalIndent(value, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	out := EscapeJSON(in)
	if !json.Valid(out) {
		t.Fatalf("not JSON: %s", out)
	}
	for _, r := range string(out) {
		if r != '\n' && r != '\t' && unsafeRune(r) {
			t.Errorf("EscapeJSON passes %U: %q", r, out)
		}
	}
	var got, want map[string]any
	json.Unmarshal(out, &got)
	json.Unmarshal(in, &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("EscapeJSON changed the value: %q, want %q", got, want)
	}
	if !strings.Contains(string(out), `\u202e`) || strings.Count(string(out), "\n") != strings.Count(string(in), "\n") {
		t.Errorf("EscapeJSON(%q) = %q", in, out)
	}
	if plain := []byte(`{"a": "b"}`); &EscapeJSON(plain)[0] != &plain[0] {
		t.Error("EscapeJSON copied a text with nothing to escape")
	}
}
