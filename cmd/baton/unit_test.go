package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/batonhq/baton/internal/unit"
)

// --install replaces a link planted where a unit goes instead of writing
// through it, and keeps whatever is where the config goes, even a
// dangling link, without creating its target.
func TestWriteNewFollowsNoLink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	service := filepath.Join(dir, "etc", "app.service")
	config := filepath.Join(dir, "etc", "baton.toml")
	os.MkdirAll(filepath.Dir(service), 0o755)
	os.Symlink(victim, service)
	os.Symlink(filepath.Join(dir, "created"), config)

	if kept, err := writeNew(unit.File{Path: service, Content: "[Unit]\n"}, false); kept || err != nil {
		t.Fatalf("writeNew(service): kept %v, %v", kept, err)
	}
	if kept, err := writeNew(unit.File{Path: config, Content: "x = 1\n"}, true); !kept || err != nil {
		t.Fatalf("writeNew(config): kept %v, %v; want kept", kept, err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "secret\n" {
		t.Errorf("the link's target was written: %q", b)
	}
	if fi, err := os.Lstat(service); err != nil || fi.Mode()&os.ModeSymlink != 0 {
		t.Errorf("the unit is still a link: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "created")); !os.IsNotExist(err) {
		t.Errorf("the dangling link's target was created: %v", err)
	}
}

// baton unit refuses an executable the sandbox hides from the service
// (a `go test` or `go run` binary is under /tmp), and --jit and --workdir
// reach the service.
func TestUnitCmd(t *testing.T) {
	for _, tt := range []struct {
		args         []string
		code         int
		stdout, warn string
	}{
		{[]string{"app", "--", "/bin/true"}, exitUsage, "", "baton unit: baton executable /tmp/"},
		{[]string{"app", "--baton", "/usr/local/bin/baton", "--", "/bin/true"}, exitOK, "\nMemoryDenyWriteExecute=yes\n", ""},
		{[]string{"app", "--baton", "/usr/local/bin/baton", "--jit", "--workdir", "/srv/app", "--", "/usr/bin/node", "server.js"}, exitOK, "\nWorkingDirectory=/srv/app\n", ""},
	} {
		var stdout, stderr strings.Builder
		code := unitCmd(tt.args, &stdout, &stderr)
		if code != tt.code || !strings.Contains(stdout.String(), tt.stdout) || !strings.HasPrefix(stderr.String(), tt.warn) || (tt.warn == "") != (stderr.Len() == 0) {
			t.Errorf("baton unit %q: exit %d, stderr %q, want exit %d, stderr %q...; stdout:\n%s", tt.args, code, stderr.String(), tt.code, tt.warn, stdout.String())
		}
		if slices.Contains(tt.args, "--jit") && strings.Contains(stdout.String(), "\nMemoryDenyWriteExecute=yes\n") {
			t.Errorf("baton unit %q: MemoryDenyWriteExecute=yes", tt.args)
		}
	}
}

// A baton built in a source tree (go.mod or .git above it) is found, so
// that baton unit warns: the service would run whatever is built there next.
func TestBuildDir(t *testing.T) {
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := buildDir(filepath.Join(tree, "bin", "baton")); got != "" {
		t.Errorf("buildDir outside any tree: %q, want none", got)
	}
	if err := os.WriteFile(filepath.Join(tree, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := buildDir(filepath.Join(tree, "bin", "baton")); got != tree {
		t.Errorf("buildDir: %q, want %q", got, tree)
	}
	if got := buildDir("/usr/local/bin/baton"); got != "" {
		t.Errorf("buildDir(/usr/local/bin/baton): %q, want none", got)
	}
}
