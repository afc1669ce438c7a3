package control

import (
	"encoding/json"
	"strings"
	"testing"
)

// Any request line gets either a request that survives a round trip, or a
// one-line error naming what is wrong; nothing panics.
func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		`{"command":"reload"}`, `{"command":"scale","workers":"+2"}`, `{"command":"restart","slot":0}`,
		`{"command":"logs","lines":5,"follow":true}`, `{"command":"stats"} {"command":"stop"}`, `{"command":1}`,
		`{"command":"scale","workers":"-"}`, `{"command":"logs","lines":-1}`, `{"cmd":"reload"}`, `[`, "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, _, err := ParseRequest(line)
		if err != nil {
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "control: ") {
				t.Fatalf("error %q: want one line starting with \"control: \"", msg)
			}
			return
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, _, err := ParseRequest(b)
		if err != nil || again.Command != req.Command || again.Workers != req.Workers || again.Follow != req.Follow {
			t.Fatalf("%s: re-encoded as %s, read back %+v, %v", line, b, again, err)
		}
	})
}
