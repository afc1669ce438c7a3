package excerpt

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestQuoteAndClip(t *testing.T) {
	long := strings.Repeat("a", 10<<20)
	for _, tt := range []struct {
		name, in, quote, clip string
	}{
		{"empty", "", `""`, ""},
		{"short", "worker.count", `"worker.count"`, "worker.count"},
		{"escaped", "a\nb", `"a\nb"`, "a\nb"},
		{"exactly Max", strings.Repeat("b", Max), `"` + strings.Repeat("b", Max) + `"`, strings.Repeat("b", Max)},
		{"one more", strings.Repeat("b", Max+1), `"` + strings.Repeat("b", Max) + `"… (65 bytes)`, strings.Repeat("b", Max) + "… (65 bytes)"},
		{"10 MB", long, `"` + long[:Max] + `"… (10485760 bytes)`, long[:Max] + "… (10485760 bytes)"},
		// A three-byte character across byte 64 is left out whole.
		{"utf-8", strings.Repeat("c", Max-1) + "€€", `"` + strings.Repeat("c", Max-1) + `"… (69 bytes)`, strings.Repeat("c", Max-1) + "… (69 bytes)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Quote(tt.in); got != tt.quote {
				t.Errorf("Quote = %.100q, want %.100q", got, tt.quote)
			}
			if got := Clip(tt.in); got != tt.clip {
				t.Errorf("Clip = %.100q, want %.100q", got, tt.clip)
			}
			if got := Clip(tt.in); !utf8.ValidString(got) {
				t.Errorf("Clip = %q, not valid UTF-8", got)
			}
		})
	}
}

func TestCut(t *testing.T) {
	if got := Cut("hello world", 5); got != "hello… (11 bytes)" {
		t.Errorf("Cut = %q", got)
	}
	if got := Cut("hello", 5); got != "hello" {
		t.Errorf("Cut = %q", got)
	}
}
