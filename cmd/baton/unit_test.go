package main

import (
	"os"
	"path/filepath"
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
