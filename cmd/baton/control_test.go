package main

import "testing"

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"plain\ttext":               "plain\ttext",
		"\x1b]0;owned\x07\x1b[2Jok": "?]0;owned??[2Jok",
		"c1 \u009b31m":              "c1 ?31m",
		"ünïcode ✓":                 "ünïcode ✓",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
