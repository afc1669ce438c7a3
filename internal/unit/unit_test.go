package unit

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/unit/unittest"
)

// The units pass systemd-analyze verify (which prints a warning, exit 0,
// for any key or value it does not take: any output fails), and the
// config they come with is valid and claims each socket by its name.
func TestFilesVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd)")
	}
	root := t.TempDir()
	files, err := Files(Spec{Name: "app", Listen: []string{"http=tcp://127.0.0.1:8080", "dns=udp://127.0.0.1:5353", "admin=unix:///run/app-admin.sock"},
		User: "www-data", Baton: "/bin/true", Command: []string{"/bin/sleep", "600"}}, root)
	if err != nil {
		t.Fatal(err)
	}
	var units []string
	var cfg *config.Config
	for _, f := range files {
		if !strings.HasPrefix(f.Path, root+"/") {
			t.Errorf("%s is not under the root %s", f.Path, root)
		}
		if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.Path, []byte(f.Content), 0o644); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f.Path, ".toml") {
			if cfg, err = config.Load(f.Path); err == nil {
				err = cfg.Validate()
			}
			if err != nil {
				t.Errorf("the config: %v\n%s", err, f.Content)
			}
			continue
		}
		units = append(units, f.Path)
	}
	if len(units) != 4 || cfg == nil || len(cfg.Listen) != 3 || cfg.Listen[1].Name != "dns" || cfg.Listen[1].Network != "udp" {
		t.Fatalf("units %v, config %+v", units, cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, analyze, append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The TCP socket allows a socket per worker beside it (auto's
	// reuseport) when baton runs as root, who binds it; the others have
	// no use for SO_REUSEPORT.
	for _, f := range files {
		if strings.Contains(f.Content, "\nReusePort=yes\n") {
			t.Errorf("%s: ReusePort=yes, though baton runs as www-data:\n%s", f.Path, f.Content)
		}
	}
	asRoot, err := Files(Spec{Name: "app", Listen: []string{"http=tcp://127.0.0.1:8080", "dns=udp://127.0.0.1:5353", "admin=unix:///run/app-admin.sock"},
		Baton: "/bin/true", Command: []string{"/bin/sleep", "600"}}, root)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range asRoot {
		if got, want := strings.Contains(f.Content, "\nReusePort=yes\n"), strings.HasSuffix(f.Path, "/app.socket"); got != want {
			t.Errorf("%s: ReusePort=yes %v, want %v:\n%s", f.Path, got, want, f.Content)
		}
		if strings.HasSuffix(f.Path, "/app.socket") {
			if err := os.WriteFile(f.Path, []byte(f.Content), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.CommandContext(ctx, analyze, "verify", f.Path, filepath.Join(filepath.Dir(f.Path), "app.service")).CombinedOutput(); err != nil || len(out) > 0 {
				t.Errorf("systemd-analyze verify, as root: %v\n%s", err, out)
			}
		}
	}
	for _, want := range []string{"ListenDatagram=127.0.0.1:5353", "FileDescriptorName=admin", "ListenStream=/run/app-admin.sock", "Service=app.service"} {
		found := false
		for _, f := range files {
			found = found || strings.Contains(f.Content, want)
		}
		if !found {
			t.Errorf("no unit says %s", want)
		}
	}
}

func TestFilesRefuse(t *testing.T) {
	for _, tt := range []struct {
		s    Spec
		want string
	}{
		{Spec{Name: "../etc", Baton: "/b", Command: []string{"x"}}, `name "../etc"`},
		{Spec{Name: "app", Baton: "b", Command: []string{"x"}}, "want an absolute path"},
		{Spec{Name: "app", Baton: "/b"}, "no worker command"},
		{Spec{Name: "app", Baton: "/b", Command: []string{"x"}, Listen: []string{"tcp://127.0.0.1:1"}}, "want NAME=URL"},
		{Spec{Name: "app", Baton: "/b", Command: []string{"x"}, Listen: []string{"h=sctp://1"}}, "unknown scheme"},
		{Spec{Name: "app", Baton: "/b", Command: []string{"x"}, User: "a b"}, "not a user name"},
		// Nothing that would end a line or be expanded reaches a unit.
		{Spec{Name: "app", Baton: "/b", Command: []string{"x"}, Listen: []string{"h=unix:///run/x%0AExecStartPre=/bin/sh"}}, "the address may not hold"},
		{Spec{Name: "app", Baton: "/b", Command: []string{"x"}, Listen: []string{"h=unix:///run/%25n.sock"}}, "the address may not hold"},
		{Spec{Name: "app", Baton: "/b", Command: []string{"x"}, Listen: []string{"x/../../etc/evil=tcp://127.0.0.1:1"}}, "the name may hold"},
		{Spec{Name: "app", Baton: "/b", Command: []string{"x"}, Listen: []string{"h%n=tcp://127.0.0.1:1"}}, "the name may hold"},
		{Spec{Name: "app", Baton: "/usr/bin/baton\nExecStartPre=/bin/sh", Command: []string{"x"}}, "want an absolute path without"},
		{Spec{Name: "app", Baton: "/opt/my baton", Command: []string{"x"}}, "want an absolute path without"},
		// Nothing the sandbox hides from the service (it could not start).
		{Spec{Name: "app", Baton: "/home/me/src/baton/bin/baton", Command: []string{"x"}}, "baton executable /home/me/src/baton/bin/baton: the service cannot see it (ProtectHome=yes)"},
		{Spec{Name: "app", Baton: "/tmp/go-build1/exe/baton", Command: []string{"x"}}, "(PrivateTmp=yes)"},
		{Spec{Name: "app", Baton: "/b", Command: []string{"/usr/bin/node", "/root/app/server.js"}}, "worker command: /root/app/server.js: the service cannot see it (ProtectHome=yes)"},
		{Spec{Name: "app", Baton: "/b", Command: []string{"x"}, WorkDir: "/var/tmp/app"}, "working directory /var/tmp/app: the service cannot see it (PrivateTmp=yes)"},
		{Spec{Name: "app", Baton: "/b", Command: []string{"x"}, WorkDir: "srv/app"}, "working directory \"srv/app\": want an absolute path"},
		// systemd removes RuntimeDirectory= at stop, and a socket in it.
		{Spec{Name: "app", Baton: "/b", Command: []string{"x"}, Listen: []string{"h=unix:///run/app/h.sock"}}, "systemd removes /run/app when app stops"},
		{Spec{Name: strings.Repeat("a", 100), Baton: "/b", Command: []string{"x"}}, "too long for the control socket's path"},
	} {
		if _, err := Files(tt.s, "/"); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.s, err, tt.want)
		}
	}
}

// The service is sandboxed: systemd-analyze security rates it at most
// unittest.MaxExposure as root (which keeps CAP_BPF and
// CAP_NET_BIND_SERVICE), as another user and with --jit; the workers get
// a working directory, a raised descriptor limit, and the config names
// the control socket in the runtime directory.
func TestFilesSecurity(t *testing.T) {
	root := t.TempDir()
	for _, s := range []Spec{
		{Name: "app", Baton: "/usr/local/bin/baton", Command: []string{"/usr/bin/node", "server.js"}, WorkDir: "/srv/app"},
		{Name: "app", Baton: "/usr/local/bin/baton", Command: []string{"/srv/app/server"}, User: "www-data"},
		{Name: "app", Baton: "/usr/local/bin/baton", Command: []string{"/usr/bin/node", "server.js"}, JIT: true},
	} {
		files, err := Files(s, root)
		if err != nil {
			t.Fatal(err)
		}
		service, cfg := files[len(files)-2], files[len(files)-1]
		for _, f := range []File{service, cfg} {
			if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(service.Path, []byte(service.Content), 0o644); err != nil {
			t.Fatal(err)
		}
		if score := unittest.Exposure(t, service.Path); score > unittest.MaxExposure {
			t.Errorf("user %q, jit %v: systemd-analyze security: %.1f, want at most %.1f:\n%s", s.User, s.JIT, score, unittest.MaxExposure, service.Content)
		}
		workDir := s.WorkDir
		if workDir == "" {
			workDir = "/var/lib/app"
		}
		for _, want := range []string{"\nWorkingDirectory=" + workDir + "\n", "\nStateDirectory=app\n", "\nLimitNOFILE=524288\n", "\nRuntimeDirectory=app\n"} {
			if !strings.Contains(service.Content, want) {
				t.Errorf("user %q: no %q in the service:\n%s", s.User, strings.TrimSpace(want), service.Content)
			}
		}
		if got := strings.Contains(service.Content, "\nMemoryDenyWriteExecute=yes\n"); got == s.JIT {
			t.Errorf("jit %v: MemoryDenyWriteExecute=yes %v", s.JIT, got)
		}
		// Root keeps only what reuseport's dealer needs; another user nothing.
		caps, filter := "CapabilityBoundingSet=CAP_BPF CAP_NET_BIND_SERVICE", "SystemCallFilter=@system-service bpf"
		if s.User != "" {
			caps, filter = "CapabilityBoundingSet=", "SystemCallFilter=@system-service"
		}
		for _, want := range []string{caps, filter} {
			if !strings.Contains(service.Content, "\n"+want+"\n") {
				t.Errorf("user %q: no %q in the service:\n%s", s.User, want, service.Content)
			}
		}
		if err := os.WriteFile(cfg.Path, []byte(cfg.Content), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := config.Load(cfg.Path)
		if err != nil {
			t.Fatal(err)
		}
		if c.Control.Socket != "/run/app/baton.sock" {
			t.Errorf("control.socket %q, want /run/app/baton.sock", c.Control.Socket)
		}
	}
	// The score can fail the test: a unit without the sandbox is exposed.
	bare := filepath.Join(root, "bare.service")
	if err := os.WriteFile(bare, []byte("[Service]\nType=notify\nExecStart=/usr/local/bin/baton run\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if score := unittest.Exposure(t, bare); score <= unittest.MaxExposure {
		t.Errorf("a bare unit scores %.1f, at most %.1f: the score cannot fail", score, unittest.MaxExposure)
	}
}
