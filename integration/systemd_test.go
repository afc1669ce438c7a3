package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/integration/load"
	"github.com/batonhq/baton/integration/nspawn"
)

// optDir is where the test's binaries and config appear inside the
// container (bound read-only).
const optDir = "/opt/baton"

// contribUnits returns contrib/systemd's units and config rewritten for the
// container: binaries and config under optDir, and port instead of 8080.
func contribUnits(t *testing.T, port int) map[string]string {
	t.Helper()
	repl := strings.NewReplacer(
		"/usr/local/bin/baton", optDir+"/baton",
		"/usr/local/bin/hello", optDir+"/hello",
		"/etc/app/baton.toml", optDir+"/baton.toml",
		"127.0.0.1:8080", "127.0.0.1:"+strconv.Itoa(port),
	)
	out := map[string]string{}
	for _, name := range []string{"app.socket", "app.service", "baton.toml"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, "contrib", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = repl.Replace(string(b))
	}
	return out
}

// bootWithApp boots a throw-away systemd with contrib's app.socket and
// app.service installed (socket started, service not yet).
func bootWithApp(t *testing.T, ctx context.Context) (*nspawn.Machine, string) {
	t.Helper()
	if err := nspawn.Available(); err != nil {
		t.Skip(err)
	}
	port := freePort(t)
	files := contribUnits(t, port)
	dir := t.TempDir()
	for _, f := range []struct{ from, to string }{{bin.baton, "baton"}, {bin.hello, "hello"}} {
		b, err := os.ReadFile(f.from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.to), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "baton.toml"), []byte(files["baton.toml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	// The container's root is a tmpfs; the bound directory must be
	// readable by the service whatever its sandboxing.
	os.Chmod(dir, 0o755)
	m, err := nspawn.Boot(ctx, nspawn.Options{Binds: map[string]string{dir: optDir}, Log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("journal of app.service:\n%s", m.Journal(context.Background(), "app.service"))
		}
		if err := m.Shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	for _, u := range []string{"app.socket", "app.service"} {
		if err := m.WriteFile("/run/systemd/system/"+u, []byte(files[u])); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Systemctl(ctx, "start", "app.socket"); err != nil {
		t.Fatal(err)
	}
	return m, fmt.Sprintf("127.0.0.1:%d", port)
}

// contrib's units under a real systemd: the first connection activates
// baton, the service reaches active and serves from both workers under
// load, systemd shows baton's status line, and `systemctl stop` drains
// and leaves no process behind.
func TestSystemdUnits(t *testing.T) {
	ctx := withTimeout(t, 3*time.Minute)
	m, addr := bootWithApp(t, ctx)

	body, err := getOnce(addr, "/") // socket activation starts app.service
	if err != nil || !strings.HasPrefix(body, "hello from pid") {
		t.Fatalf("first request through app.socket: %q, %v", body, err)
	}
	if err := m.WaitActive(ctx, "app.service"); err != nil {
		t.Fatal(err)
	}
	for _, mode := range modes {
		r, err := load.Run(ctx, load.Options{Addr: addr, Concurrency: 32, Duration: 2 * time.Second, Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("under systemd: %s", r)
		if r.Failed() != 0 {
			t.Errorf("under systemd: %s, want no failure %v", r, r.Samples)
		}
		// 32 keep-alive connections made at once can all land on one
		// worker of a shared socket; fresh connections reach both.
		if mode == load.PerRequest && len(r.PIDs) != 2 {
			t.Errorf("under systemd: answers from %d workers, want 2", len(r.PIDs))
		}
	}
	status, _ := m.Show(ctx, "app.service", "StatusText")
	if !strings.HasPrefix(status, "2/2 workers ready, generation 1") {
		t.Errorf("StatusText = %q, want baton's status line", status)
	}

	if _, err := m.Systemctl(ctx, "stop", "app.service"); err != nil {
		t.Fatal(err)
	}
	if st, _ := m.Show(ctx, "app.service", "ActiveState"); st != "inactive" {
		t.Errorf("after stop ActiveState = %q, want inactive", st)
	}
	if res, _ := m.Show(ctx, "app.service", "Result"); res != "success" {
		t.Errorf("after stop Result = %q, want success (baton exits 0 once drained)", res)
	}
	ps, err := m.Run(ctx, "ps", "-e", "-o", "pid=,args=")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(ps, "\n") {
		if strings.Contains(line, optDir) {
			t.Errorf("left after systemctl stop: %s", line)
		}
	}
}
