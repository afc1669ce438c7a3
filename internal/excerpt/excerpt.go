package excerpt

import (
	"strconv"
	"unicode/utf8"
)

// Max is how many bytes of a value Quote and Clip keep.
const Max = 64

// Quote returns s as a Go string literal, as %q prints it, when it is at
// most Max bytes long; a longer one is cut after at most Max bytes (on a
// character boundary) and marked: "abc"… (70000 bytes).
func Quote(s string) string {
	if len(s) <= Max {
		return strconv.Quote(s)
	}
	return strconv.Quote(prefix(s, Max)) + more(len(s))
}

// Clip returns s as it is when it is at most Max bytes long, else its
// first bytes marked as Quote marks them: abc… (70000 bytes). It is for
// what a message shows unquoted, such as a configuration key.
func Clip(s string) string { return Cut(s, Max) }

// Cut is Clip with another length: s when it is at most n bytes, else
// at most its first n bytes and the mark.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return prefix(s, n) + more(len(s))
}

// prefix returns at most the first n bytes of s, never half a character.
func prefix(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func more(n int) string { return "… (" + strconv.Itoa(n) + " bytes)" }
