package console

import (
	"fmt"
	"iter"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Printable returns s as a terminal may show it: every character that
// could start an escape sequence or reorder the text around it, and every
// byte that is not UTF-8, is written as a visible Go escape (\x1b, \r,
// \u009b, \u202e, \x9b). Those are the C0 and C1 controls and DEL (tabs
// are kept), the format characters (the bidi controls U+200E, U+200F,
// U+202A–U+202E, U+2066–U+2069 among them) and the line and paragraph
// separators. A backslash is left as it is: the result is for reading.
func Printable(s string) string {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if escaped(r, n) {
			break
		}
		i += n
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for p := range pieces(s[i:]) {
		b.WriteString(p)
	}
	return b.String()
}

// pieces yields s a character at a time as Printable writes it: the
// character itself, or its escape.
func pieces(s string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for i := 0; i < len(s); {
			r, n := utf8.DecodeRuneInString(s[i:])
			p := s[i : i+n]
			switch {
			case r == utf8.RuneError && n == 1:
				p = fmt.Sprintf(`\x%02x`, s[i])
			case escaped(r, n):
				q := strconv.QuoteRune(r)
				p = q[1 : len(q)-1]
			}
			if !yield(p) {
				return
			}
			i += n
		}
	}
}

// escaped reports whether the character r, n bytes long in its string,
// is written as an escape.
func escaped(r rune, n int) bool {
	return r == utf8.RuneError && n == 1 || r != '\t' && unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)
}

// EscapeJSON returns the JSON text b with every character Printable would
// escape written as a \u escape: the same value, safe to show on a
// terminal. encoding/json escapes C0 controls and U+2028, U+2029 itself,
// and a control below U+0020 outside a string is JSON's white space; DEL,
// C1 controls and format characters it writes as they are.
func EscapeJSON(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r < ' ' || !escaped(r, n) {
			if out != nil {
				out = append(out, b[i:i+n]...)
			}
			i += n
			continue
		}
		if out == nil {
			out = append(make([]byte, 0, len(b)+16), b[:i]...)
		}
		if r > 0xffff {
			r1, r2 := utf16.EncodeRune(r)
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		} else {
			out = fmt.Appendf(out, `\u%04x`, r) // a byte that is not UTF-8: \ufffd
		}
		i += n
	}
	if out == nil {
		return b
	}
	return out
}
