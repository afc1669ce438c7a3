package config

import (
	"strings"
	"testing"
)

// Any file is either a configuration that validates, or an error of one
// line that starts with "config: "; nothing panics.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"[[listen]]\nname = \"http\"\naddress = \"tcp://127.0.0.1:8080\"\n[worker]\ncommand = [\"hello\"]\n",
		"[worker]\ncommand = [\"a\"]\ndrain_timeout = 30\n",
		"[worker]\ncount = -1\n", "restart.window = 1.5\n", "worker = { watchdog = \"5s\" }\n", "[control]\nmetrics = \":9100\"\n",
		"[worker\n", "x = 1\nx = 2\n", "[reload]\ntimeout = \"1h\"\nsurge = 99999999999999999999\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("baton.toml", data)
		if err == nil {
			err = c.Validate()
		}
		if err == nil {
			return
		}
		if msg := err.Error(); strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "config: ") {
			t.Fatalf("error %q: want one line starting with \"config: \"", msg)
		}
	})
}
