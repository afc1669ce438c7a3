package supervisor

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/config"
	"github.com/batonhq/baton/handoff"
	"github.com/batonhq/baton/systemd"
)

// With [systemd] fd_store, self-bound sockets go to systemd's fd store, and
// on the next start the stored ones come back by name: the one the config
// still has is served as is; one it no longer has, or whose address
// changed, is dropped from the store.
func TestFDStore(t *testing.T) {
	fake, err := systemd.ListenNotify(filepath.Join(t.TempDir(), "systemd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
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
	stored := func(t *testing.T, network, addr string) (systemd.Socket, string) {
		t.Helper()
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := handoff.DupFd(ln.(*net.TCPListener))
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
			key := "FDSTORE=1 " + m["FDNAME"]
			if m["FDSTOREREMOVE"] == "1" {
				key = "FDSTOREREMOVE=1 " + m["FDNAME"]
			}
			if !want[key] {
				t.Errorf("unexpected message to systemd: %v", m)
			}
			delete(want, key)
		case <-timeout:
			t.Fatalf("systemd never got %v", want)
		}
	}
}
