package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestProxyConfigs fills in each committed proxy configuration the way
// the bench does and has the installed proxy check it: a template that
// renders into something its version rejects would fail `make bench`
// minutes in.
func TestProxyConfigs(t *testing.T) {
	for _, tc := range []struct {
		kind  string
		check func(bin, dir, cfg string) []string
	}{
		{"nginx", func(bin, dir, cfg string) []string {
			return []string{bin, "-e", "stderr", "-p", dir + "/", "-c", cfg, "-t"}
		}},
		{"haproxy", func(bin, _, cfg string) []string { return []string{bin, "-c", "-f", cfg} }},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			bin := sbin(tc.kind)
			if _, err := os.Stat(bin); err != nil {
				t.Skipf("%s is not installed (contrib/dev/bench-deps.sh installs it): %v", tc.kind, err)
			}
			s := settings{logs: t.TempDir(), nginx: sbin("nginx"), haproxy: sbin("haproxy")}
			px, err := newProxy(s, tc.kind, "127.0.0.1:1")
			if err != nil {
				t.Fatal(err)
			}
			px.servers = []string{"127.0.0.1:2", "127.0.0.1:3"}
			if err := px.configure(); err != nil {
				t.Fatal(err)
			}
			argv := tc.check(bin, px.dir, px.config())
			out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
			if err != nil {
				b, _ := os.ReadFile(px.config())
				t.Fatalf("%v: %v\n%s\nthe configuration, %s:\n%s", argv, err, out, filepath.Base(px.config()), b)
			}
		})
	}
}
