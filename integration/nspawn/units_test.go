package nspawn

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// contrib is where the example units and config live.
var contrib = filepath.Join("..", "..", "contrib", "systemd")

// TestUnitsVerify lints contrib's units with systemd-analyze verify, which
// only warns (exit 0) on unknown keys or bad values: any output fails.
// baton is not installed here, so ExecStart= runs /bin/true on a copy.
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd)")
	}
	dir := t.TempDir()
	for _, name := range []string{"baton.toml", "app.socket", "app.service"} {
		b, err := os.ReadFile(filepath.Join(contrib, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "app.service" {
			b = rewriteExecStart(t, b, filepath.Join(dir, "baton.toml"))
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	verify := func(units ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, analyze, append([]string{"verify"}, units...)...).CombinedOutput()
		if err != nil {
			return string(out) + "\n" + err.Error()
		}
		return string(out)
	}

	if out := verify(filepath.Join(dir, "app.socket"), filepath.Join(dir, "app.service")); out != "" {
		t.Errorf("systemd-analyze verify app.socket app.service:\n%s", out)
	}

	// The lint must be able to fail: a misspelt key only warns.
	b, _ := os.ReadFile(filepath.Join(dir, "app.service"))
	bad := strings.Replace(string(b), "NotifyAccess=", "NotifyAcess=", 1)
	if err := os.WriteFile(filepath.Join(dir, "bad.service"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := verify(filepath.Join(dir, "bad.service")); !strings.Contains(out, "NotifyAcess") {
		t.Errorf("systemd-analyze verify does not flag an unknown key; output: %q", out)
	}
}

// execStart matches an ExecStart= line: its prefixes, binary and arguments.
var execStart = regexp.MustCompile(`(?m)^ExecStart=([-@:+!]*)(\S+)(.*)$`)

// rewriteExecStart points ExecStart= at /bin/true and --config at config.
func rewriteExecStart(t *testing.T, unit []byte, config string) []byte {
	t.Helper()
	if n := len(execStart.FindAll(unit, -1)); n != 1 {
		t.Fatalf("app.service has %d ExecStart= lines, want 1", n)
	}
	return execStart.ReplaceAllFunc(unit, func(line []byte) []byte {
		m := execStart.FindSubmatch(line)
		args := regexp.MustCompile(`--config\s+\S+`).ReplaceAllLiteralString(string(m[3]), "--config "+config)
		return []byte("ExecStart=" + string(m[1]) + "/bin/true" + args)
	})
}

// TestUnitsSettings checks the settings the units are built around, and
// that the units and baton.toml agree.
func TestUnitsSettings(t *testing.T) {
	socket := readUnit(t, "app.socket")
	service := readUnit(t, "app.service")
	config := readTOML(t, "baton.toml")

	for _, c := range []struct {
		unit      map[string][]string
		name, key string
		want      string
	}{
		{socket, "app.socket", "FileDescriptorName", "http"},
		{service, "app.service", "Type", "notify"},
		{service, "app.service", "NotifyAccess", "main"},
		{service, "app.service", "ExecStart", "/usr/local/bin/baton run --config /etc/app/baton.toml"},
		{service, "app.service", "KillMode", "mixed"},
		{service, "app.service", "Restart", "on-failure"},
		{service, "app.service", "Requires", "app.socket"},
		{service, "app.service", "After", "app.socket"},
		{service, "app.service", "RuntimeDirectory", "app"},
		{service, "app.service", "NoNewPrivileges", "yes"},
		{service, "app.service", "ProtectSystem", "strict"},
		{service, "app.service", "ProtectHome", "yes"},
		{service, "app.service", "PrivateTmp", "yes"},
	} {
		if got := c.unit[c.key]; len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: %s=%q, want %q", c.name, c.key, got, c.want)
		}
	}
	// Later issues add these, with tests of their own.
	for _, key := range []string{"ExecReload", "WatchdogSec"} {
		if v, ok := service[key]; ok {
			t.Errorf("app.service: %s=%q is not supported yet", key, v)
		}
	}

	if got, want := config["name"], socket["FileDescriptorName"]; len(want) != 1 || got != want[0] {
		t.Errorf("baton.toml listen name %q, app.socket FileDescriptorName=%q", got, want)
	}
	if got, want := config["address"], socket["ListenStream"]; len(want) != 1 || got != "tcp://"+want[0] {
		t.Errorf("baton.toml listen address %q, app.socket ListenStream=%q", got, want)
	}
	drain, err := time.ParseDuration(config["drain_timeout"])
	if err != nil {
		t.Fatalf("baton.toml drain_timeout: %v", err)
	}
	stop, err := strconv.Atoi(strings.Join(service["TimeoutStopSec"], ""))
	if err != nil {
		t.Fatalf("app.service TimeoutStopSec=%q: want whole seconds: %v", service["TimeoutStopSec"], err)
	}
	if time.Duration(stop)*time.Second <= drain {
		t.Errorf("app.service TimeoutStopSec=%d is not above baton.toml drain_timeout %v", stop, drain)
	}
	for key, want := range map[string]string{"count": "2", "ready": "notify", "command": `["/usr/local/bin/hello"]`} {
		if got := config[key]; got != want {
			t.Errorf("baton.toml %s = %s, want %s", key, got, want)
		}
	}
}

// readUnit returns a unit file's settings, key to values (sections ignored).
func readUnit(t *testing.T, name string) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(contrib, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a setting: %q", name, line)
		}
		kv[strings.TrimSpace(k)] = append(kv[strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return kv
}

// readTOML reads the flat `key = value` lines of a small TOML file, string
// quotes removed and comments dropped (enough for baton.toml's example;
// baton's own loader is the real parser).
func readTOML(t *testing.T, name string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(contrib, name))
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if i := strings.Index(v, "#"); i >= 0 {
			v = v[:i]
		}
		v = strings.TrimSpace(v)
		if s, err := strconv.Unquote(v); err == nil {
			v = s
		}
		kv[strings.TrimSpace(k)] = v
	}
	return kv
}
