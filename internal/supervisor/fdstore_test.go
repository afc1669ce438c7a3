package supervisor

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/spawn"
	"github.com/batonhq/baton/internal/systemd"
)

// With [systemd] fd_store, self-bound sockets go to systemd's fd store, and
// on the next start the stored ones come back by name: the one the config
// still has is served as is; one it no longer has, or whose address
// changed, is dropped from the store.
func TestFDStore(t *testing.T) {
	msgs := fakeSystemd(t)
	stored := func(t *testing.T, network, addr string) (systemd.Socket, string) {
		t.Helper()
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := spawn.DupFd(ln.(*net.TCPListener))
		if err != nil {
			t.Fatal(err)
		}
		a := ln.Addr().String()
		ln.Close()
		return systemd.Socket{Name: systemd.FDStorePrefix + "http", Fd: fd}, a
	}
	keep, keepAddr := stored(t, "tcp", "127.0.0.1:0")
	old, _ := stored(t, "tcp", "127.0.0.1:0")
	old.Name = systemd.FDStorePrefix + "old"
	admin, _ := stored(t, "tcp", "127.0.0.1:0") // config moves admin elsewhere
	admin.Name = systemd.FDStorePrefix + "admin"
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	newAdmin := ln.Addr().String()
	ln.Close()

	cfg := testConfig("serve", 1, func(c *config.Config) {
		c.Listen = []config.Listener{
			{Name: "http", Address: "tcp://" + keepAddr},
			{Name: "admin", Address: "tcp://" + newAdmin},
		}
		c.Systemd.FDStore = true
	})
	runUntilReady(t, cfg, []systemd.Socket{keep, old, admin})
	if body := get(t, keepAddr); !strings.Contains(body, "names http:admin") {
		t.Errorf("the stored http socket does not serve: %q", body)
	}
	// The test worker serves only its first socket; admin is bound if a
	// connection gets into its queue.
	if c, err := net.Dial("tcp", newAdmin); err != nil {
		t.Errorf("admin is not bound at its new address: %v", err)
	} else {
		c.Close()
	}
	// Expected to systemd: old and admin removed, the new admin stored;
	// http is in the store already.
	want := map[string]bool{"FDSTOREREMOVE=1 baton-old": true, "FDSTOREREMOVE=1 baton-admin": true, "FDSTORE=1 baton-admin": true}
	timeout := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case m := <-msgs:
			if key := storeMessage(m); !want[key] {
				t.Errorf("unexpected message to systemd: %v", m)
			} else {
				delete(want, key)
			}
		case <-timeout:
			t.Fatalf("systemd never got %v", want)
		}
	}
}

// A reload that moves a stored listener to another address: once the old
// socket is released, FDSTOREREMOVE= (which drops every socket of the
// name) is followed by storing the new socket again, so that the store
// keeps the one in use.
func TestFDStoreAddressMoves(t *testing.T) {
	msgs := fakeSystemd(t)
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	first, second := free(), free()
	withAdmin := func(addr string) func(*config.Config) {
		return func(c *config.Config) {
			c.Listen = append(c.Listen, config.Listener{Name: "admin", Address: "tcp://" + addr})
			c.Systemd.FDStore = true
		}
	}
	h := startHarness(t, testConfig("serve", 1, withAdmin(first)))
	h.waitNote("READY=1")
	h.setConfig(h.config("serve", 1, withAdmin(second)), nil)
	if _, err := h.reload(); err != nil {
		t.Fatal(err)
	}
	h.waitSettled()
	var got []string
	timeout := time.After(10 * time.Second)
	for len(got) < 4 {
		select {
		case m := <-msgs:
			got = append(got, storeMessage(m))
		case <-timeout:
			t.Fatalf("systemd got %v, want 4 messages", got)
		}
	}
	want := []string{"FDSTORE=1 baton-admin", "FDSTORE=1 baton-admin", "FDSTOREREMOVE=1 baton-admin", "FDSTORE=1 baton-admin"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("systemd got %v, want %v (the moved socket stored again after the removal)", got, want)
	}
}

// fakeSystemd is a notify socket in NOTIFY_SOCKET; it delivers each
// message's fields.
func fakeSystemd(t *testing.T) <-chan map[string]string {
	t.Helper()
	fake, err := systemd.ListenNotify(filepath.Join(t.TempDir(), "systemd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	t.Setenv("NOTIFY_SOCKET", fake.Path())
	msgs := make(chan map[string]string, 20)
	go func() {
		for {
			m, err := fake.Receive()
			if err != nil {
				return
			}
			msgs <- m.Fields
		}
	}()
	return msgs
}

// storeMessage summarises an fd-store message as "FDSTORE=1 NAME" or
// "FDSTOREREMOVE=1 NAME".
func storeMessage(m map[string]string) string {
	if m["FDSTOREREMOVE"] == "1" {
		return "FDSTOREREMOVE=1 " + m["FDNAME"]
	}
	return "FDSTORE=1 " + m["FDNAME"]
}
