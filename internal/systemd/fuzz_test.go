package systemd

import (
	"bytes"
	"testing"
)

// Any datagram is either malformed or a set of fields whose keys are
// non-empty and hold neither '=' nor a newline nor a NUL; nothing panics.
func FuzzParseNotify(f *testing.F) {
	for _, seed := range []string{"READY=1", "READY=1\nSTATUS=warm\n", "STOPPING=1\n\n", "=1", "READY", "A=1\x00", "WATCHDOG=1\nWATCHDOG=trigger", ""} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fields, ok := ParseNotify(b)
		if !ok {
			if fields != nil {
				t.Fatalf("malformed, yet fields %v", fields)
			}
			return
		}
		if len(fields) == 0 {
			t.Fatal("well-formed with no field")
		}
		for k, v := range fields {
			if k == "" || bytes.ContainsAny([]byte(k), "=\n\x00") || bytes.ContainsAny([]byte(v), "\n\x00") {
				t.Fatalf("field %q=%q from %q", k, v, b)
			}
		}
	})
}
