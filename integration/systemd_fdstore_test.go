package integration

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// No .socket unit: baton binds its socket and keeps it in systemd's fd
// store ([systemd] fd_store, FileDescriptorStoreMax=), so `systemctl
// restart app` under load refuses no connection: they wait in the kernel's
// queue while the new baton starts and takes the socket back.
func TestSystemdFDStoreRestart(t *testing.T) {
	ctx := withTimeout(t, 3*time.Minute)
	app := bootAppWith(t, ctx, appOptions{
		service:     "app-fdstore.service",
		noSocket:    true,
		extraConfig: "\n[systemd]\nfd_store = true\n",
		start:       true,
	})
	m := app.m
	for _, mode := range modes {
		g := startLoad(t, app.addr, mode, 32)
		for i := 0; i < 3; i++ {
			before, err := m.MainPID(ctx, "app.service")
			if err != nil {
				t.Fatal(err)
			}
			// systemd refuses a sixth start within 10 s (its default
			// StartLimitBurst=5 per StartLimitIntervalSec=10s, which the
			// unit keeps): on a fast machine these restarts come quicker
			// than that. reset-failed clears the count, as an operator
			// restarting by hand would.
			if _, err := m.Systemctl(ctx, "reset-failed", "app.service"); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Systemctl(ctx, "restart", "app.service"); err != nil {
				t.Fatalf("restart %d: %v", i, err)
			}
			if err := m.WaitActive(ctx, "app.service"); err != nil {
				t.Fatal(err)
			}
			after, err := m.MainPID(ctx, "app.service")
			if err != nil {
				t.Fatal(err)
			}
			if after == before {
				t.Fatalf("MainPID %d unchanged: the service was not restarted", after)
			}
			waitServed(t, g, 300)
		}
		r := g.Stop()
		t.Logf("3 × systemctl restart, no .socket unit, fd store: %s", r)
		if r.Refused != 0 {
			t.Errorf("%s: %d connections refused across restarts: %s %v", mode, r.Refused, r, r.Samples)
		}
	}
	j := m.Journal(ctx, "app.service")
	if !strings.Contains(j, `msg="socket kept in systemd's fd store" name=http`) {
		t.Errorf("baton never stored its socket:\n%s", j)
	}
	if n := strings.Count(j, "Started app.service"); n < 7 {
		t.Errorf("app.service started %s times, want 1 + 6 restarts", strconv.Itoa(n))
	}
}
