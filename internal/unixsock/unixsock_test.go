package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Under umask 000 the socket files are still owner-only from the start:
// chmod after bind would have left them world-writable for a moment.
func TestOwnerOnlyUnderPermissiveUmask(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()

	ln, err := Listen(filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	called := false
	pc, err := ListenPacket(filepath.Join(dir, "d.sock"), func(fd int) error { called = true; return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if !called {
		t.Error("ListenPacket did not call setup")
	}
	for _, name := range []string{"s.sock", "d.sock"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != Mode {
			t.Errorf("%s: mode %v, want a socket with %o", name, fi.Mode(), Mode)
		}
	}

	// The listener works and closing it leaves the file to its owner.
	c, err := net.Dial("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	ln.Close()
	if _, err := os.Stat(filepath.Join(dir, "s.sock")); err != nil {
		t.Errorf("closing the listener removed its file: %v", err)
	}
}

func TestPathTooLong(t *testing.T) {
	path := "/" + strings.Repeat("x", MaxPath)
	_, err := Listen(path)
	if err == nil || !strings.Contains(err.Error(), "more than the 107 a unix socket path may have") || strings.Contains(err.Error(), "invalid argument") {
		t.Errorf("Listen(%d-byte path) = %v, want an error saying the path is too long", len(path), err)
	}
}
