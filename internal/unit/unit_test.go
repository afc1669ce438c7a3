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
	} {
		if _, err := Files(tt.s, "/"); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.s, err, tt.want)
		}
	}
}
