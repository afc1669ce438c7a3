package nspawn

import (
	"os"
	"strings"
	"testing"
)

func TestParseStat(t *testing.T) {
	for _, c := range []struct {
		in   string
		want procStat
		ok   bool
	}{
		{"1 (systemd) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 42 1000 100", procStat{"systemd", 'S', 0, 1, 42}, true},
		{"77 (a) b (c)) Z 5 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 9 0 0", procStat{"a) b (c)", 'Z', 5, 77, 9}, true},
		{"77 (x) S 5", procStat{}, false},
		{"garbage", procStat{}, false},
	} {
		got, err := parseStat(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v, ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
	self, err := readStat(os.Getpid())
	if err != nil || self.ppid != os.Getppid() {
		t.Errorf("readStat(self) = %+v, %v; want ppid %d", self, err, os.Getppid())
	}
}

func TestOnTmpfs(t *testing.T) {
	ms := []mountInfo{
		{point: "/", fstype: "ext4"},
		{point: "/run", fstype: "tmpfs"},
		{point: "/run/systemd/nspawn", fstype: "tmpfs"},
		{point: "/srv", fstype: "tmpfs"},
		{point: "/srv", fstype: "xfs"}, // mounted over the tmpfs
	}
	for path, want := range map[string]bool{
		"/run/systemd/nspawn": true,
		"/run/systemd":        true,
		"/runner/x":           false,
		"/srv/a":              false,
		"/var":                false,
	} {
		if got := onTmpfs(ms, path); got != want {
			t.Errorf("onTmpfs(%q) = %v, want %v", path, got, want)
		}
	}
	if got := unescapeMount(`/mnt/a\040b\\`); got != `/mnt/a b\\` {
		t.Errorf("unescapeMount = %q", got)
	}
}

func TestOptionsChecks(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		binds map[string]string
		ok    bool
	}{
		{map[string]string{dir: "/opt/baton"}, true},
		{map[string]string{"relative": "/opt"}, false},
		{map[string]string{dir: "opt"}, false},
		{map[string]string{dir: "/opt:rbind"}, false},
		{map[string]string{dir + "/missing": "/opt"}, false},
	} {
		args, err := bindArgs(c.binds)
		if (err == nil) != c.ok {
			t.Errorf("bindArgs(%v) = %q, %v; want ok=%v", c.binds, args, err, c.ok)
		}
	}
	for name, want := range map[string]bool{
		"baton-it-1-2": true, "": false, "..": false, "a/b": false, "a b": false,
		strings.Repeat("x", 64): true, strings.Repeat("x", 65): false,
	} {
		if got := validName(name); got != want {
			t.Errorf("validName(%q) = %v, want %v", name, got, want)
		}
	}
}
