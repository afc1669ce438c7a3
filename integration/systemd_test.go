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

	"github.com/batonhq/baton/integration/nspawn"
	"github.com/batonhq/baton/loadtest"
)

// optDir is where the test's binaries and config appear inside the
// container (bound read-only).
const optDir = "/opt/baton"

// bootApp boots a throw-away systemd with contrib's app.socket and
// app.service exactly as shipped (ExecReload= and all; only the binaries'
// directory and the port differ) and contrib's config at appConfig, and
// starts the socket. With startService it also starts the service and
// waits for it to be active; else the first connection activates it.
func bootApp(t *testing.T, ctx context.Context, startService bool) *reloadApp {
	t.Helper()
	return bootAppWith(t, ctx, appOptions{start: startService})
}

// appOptions vary what bootAppWith installs.
type appOptions struct {
	service     string // the contrib unit installed as app.service; "" = app.service
	noSocket    bool   // install no app.socket (and start nothing through it)
	extraConfig string // TOML appended to contrib's baton.toml
	worker      string // TOML added to its [worker] table
	start       bool   // start app.service and wait until it is active
}

// bootAppWith is bootApp with options.
func bootAppWith(t *testing.T, ctx context.Context, o appOptions) *reloadApp {
	t.Helper()
	if o.service == "" {
		o.service = "app.service"
	}
	if err := nspawn.Available(); err != nil {
		t.Skip(err)
	}
	port := freePort(t)
	// Only the binaries move to optDir; the config stays where the unit
	// says.
	repl := strings.NewReplacer(
		"/usr/local/bin/baton", optDir+"/baton",
		"/usr/local/bin/hello", optDir+"/hello",
		"127.0.0.1:8080", "127.0.0.1:"+strconv.Itoa(port),
	)
	files := map[string]string{}
	for name, from := range map[string]string{"app.socket": "app.socket", "app.service": o.service, "baton.toml": "baton.toml"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, "contrib", "systemd", from))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = repl.Replace(string(b))
	}
	files["baton.toml"] = strings.Replace(files["baton.toml"], "[worker]\n", "[worker]\n"+o.worker, 1) + o.extraConfig
	if o.noSocket {
		delete(files, "app.socket")
	}
	if !strings.Contains(files["app.service"], "--config "+appConfig) {
		t.Fatalf("contrib's app.service does not read %s:\n%s", appConfig, files["app.service"])
	}
	m, dir := bootWithBinaries(t, ctx)
	install := map[string]string{
		"/run/systemd/system/app.service": files["app.service"],
		appConfig:                         files["baton.toml"],
	}
	if sock, ok := files["app.socket"]; ok {
		install["/run/systemd/system/app.socket"] = sock
	}
	for path, data := range install {
		if err := m.WriteFile(path, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
	if !o.noSocket {
		if _, err := m.Systemctl(ctx, "start", "app.socket"); err != nil {
			t.Fatal(err)
		}
	}
	if o.start {
		if _, err := m.Systemctl(ctx, "start", "app.service"); err != nil {
			t.Fatal(err)
		}
		if err := m.WaitActive(ctx, "app.service"); err != nil {
			t.Fatal(err)
		}
	}
	return &reloadApp{m: m, addr: fmt.Sprintf("127.0.0.1:%d", port), config: files["baton.toml"], bin: dir}
}

// bootWithBinaries boots a throw-away systemd with baton and hello at
// optDir (copied to a directory of their own, dir), shut down at the
// end of the test, with app.service's journal logged if it failed.
func bootWithBinaries(t *testing.T, ctx context.Context) (m *nspawn.Machine, dir string) {
	t.Helper()
	dir = t.TempDir()
	for _, f := range []struct{ from, to string }{{bin.baton, "baton"}, {bin.hello, "hello"}} {
		b, err := os.ReadFile(f.from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.to), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
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
	return m, dir
}

// contrib's units under a real systemd: the first connection activates
// baton, the service reaches active and serves from both workers under
// load, systemd shows baton's status line, and `systemctl stop` drains
// and leaves no process behind.
func TestSystemdUnits(t *testing.T) {
	ctx := withTimeout(t, 3*time.Minute)
	app := bootApp(t, ctx, false)
	m, addr := app.m, app.addr

	body, err := getOnce(addr, "/") // socket activation starts app.service
	if err != nil || !strings.HasPrefix(body, "hello from pid") {
		t.Fatalf("first request through app.socket: %q, %v", body, err)
	}
	if err := m.WaitActive(ctx, "app.service"); err != nil {
		t.Fatal(err)
	}
	for _, mode := range modes {
		r, err := loadtest.Run(ctx, loadtest.Options{Addr: addr, Concurrency: 32, Duration: 2 * time.Second, Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("under systemd: %s", r)
		if r.Failed() != 0 {
			t.Errorf("under systemd: %s, want no failure %v", r, r.Samples)
		}
		// 32 keep-alive connections made at once can all land on one
		// worker of a shared socket; fresh connections reach both.
		if mode == loadtest.PerRequest && len(r.PIDs) != 2 {
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
