package nspawn

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/unit"
	"github.com/batonhq/baton/internal/unit/unittest"
)

// contrib is where the example units and config live.
var contrib = filepath.Join("..", "..", "contrib", "systemd")

// TestUnitsVerify lints contrib's units with systemd-analyze verify, which
// only warns (exit 0) on unknown keys or bad values: any output fails. The
// one exception is app-notify-reload.service on systemd < 253, which does
// not know Type=notify-reload: exactly that one warning is allowed there.
// baton is not installed here, so the Exec*= lines run /bin/true on a copy
// (verify checks that every command exists).
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd)")
	}
	version := systemdVersion(t, analyze)
	dir := t.TempDir()
	config := filepath.Join(dir, "baton.toml")
	// install copies a contrib file into a directory of its own, as
	// app.socket and a service installed as app.service (what both
	// services are meant to be, so the socket finds its service).
	install := func(service string, edit func(string) string) (socket, unit string) {
		sub, err := os.MkdirTemp(dir, "")
		if err != nil {
			t.Fatal(err)
		}
		for from, to := range map[string]string{"app.socket": "app.socket", service: "app.service"} {
			b, err := os.ReadFile(filepath.Join(contrib, from))
			if err != nil {
				t.Fatal(err)
			}
			if to == "app.service" {
				b = rewriteExec(t, from, b, config)
				if edit != nil {
					b = []byte(edit(string(b)))
				}
			}
			if err := os.WriteFile(filepath.Join(sub, to), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return filepath.Join(sub, "app.socket"), filepath.Join(sub, "app.service")
	}
	b, err := os.ReadFile(filepath.Join(contrib, "baton.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, b, 0o644); err != nil {
		t.Fatal(err)
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

	services, err := filepath.Glob(filepath.Join(contrib, "*.service"))
	if err != nil {
		t.Fatal(err)
	}
	if len(services) < 2 {
		t.Fatalf("contrib/systemd has %d services, want app.service and %s", len(services), notifyReloadUnit)
	}
	for _, path := range services {
		name := filepath.Base(path)
		socket, unit := install(name, nil)
		out := verify(socket, unit)
		if name == notifyReloadUnit {
			if bad := unexpectedVerifyOutput(t, unit, version, out); bad != "" {
				t.Errorf("systemd-analyze verify app.socket %s (systemd %d): unexpected output:\n%s", name, version, bad)
			}
			continue
		}
		if out != "" {
			t.Errorf("systemd-analyze verify app.socket %s:\n%s", name, out)
		}
	}

	// The lint must be able to fail: a misspelt key only warns...
	misspell := func(s string) string { return strings.Replace(s, "NotifyAccess=", "NotifyAcess=", 1) }
	socket, unit := install("app.service", misspell)
	if out := verify(socket, unit); !strings.Contains(out, "NotifyAcess") {
		t.Errorf("systemd-analyze verify does not flag an unknown key; output: %q", out)
	}
	// ...and the notify-reload allowance lets nothing else through.
	socket, unit = install(notifyReloadUnit, misspell)
	if out := verify(socket, unit); unexpectedVerifyOutput(t, unit, version, out) == "" {
		t.Errorf("a misspelt key in %s passes the lint; output: %q", notifyReloadUnit, out)
	}
}

// TestUnitsSecurity: systemd-analyze security rates each of contrib's
// services at most unittest.MaxExposure (as `baton unit` writes them,
// internal/unit's TestFilesSecurity).
func TestUnitsSecurity(t *testing.T) {
	services, err := filepath.Glob(filepath.Join(contrib, "*.service"))
	if err != nil || len(services) < 3 {
		t.Fatalf("contrib/systemd services %v, %v: want app.service and its two variants", services, err)
	}
	for _, path := range services {
		if score := unittest.Exposure(t, path); score > unittest.MaxExposure {
			t.Errorf("%s: systemd-analyze security --offline=yes: %.1f, want at most %.1f", filepath.Base(path), score, unittest.MaxExposure)
		}
	}
}

// TestUnitsAsWritten: contrib's services have the settings `baton unit`
// writes for a root service named app (the sandbox, the directories, the
// limits), but for what ties them to one .socket unit or another.
func TestUnitsAsWritten(t *testing.T) {
	files, err := unit.Files(unit.Spec{Name: "app", Baton: "/usr/local/bin/baton", Command: []string{"/usr/local/bin/hello"}}, "/")
	if err != nil {
		t.Fatal(err)
	}
	written := map[string][]string{}
	for _, line := range strings.Split(files[len(files)-2].Content, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			written[k] = append(written[k], v)
		}
	}
	for _, name := range []string{"app.service", notifyReloadUnit, "app-fdstore.service"} {
		service := readUnit(t, name)
		for key, want := range written {
			switch key {
			case "Description", "Requires", "After", "Sockets", "Type", "ExecReload", "WantedBy":
				continue
			}
			if got := service[key]; !slices.Equal(got, want) {
				t.Errorf("%s: %s=%q, baton unit writes %q", name, key, got, want)
			}
		}
	}
}

// notifyReloadUnit is the Type=notify-reload variant of app.service, for
// systemd >= 253.
const notifyReloadUnit = "app-notify-reload.service"

// unexpectedVerifyOutput returns the lines of systemd-analyze verify's
// output about the notify-reload unit at path that are not allowed: none
// is on systemd >= 253; on older ones, only the warning that Type= (on its
// line of the file) is not understood, once.
func unexpectedVerifyOutput(t *testing.T, path string, version int, out string) string {
	t.Helper()
	out = strings.TrimSpace(out)
	if out == "" || version >= 253 {
		return out
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	typeLine := 0
	for i, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Type=") {
			typeLine = i + 1
		}
	}
	allowed := fmt.Sprintf("%s:%d: Failed to parse service type, ignoring: notify-reload", path, typeLine)
	var bad []string
	seen := false
	for _, line := range strings.Split(out, "\n") {
		if line == allowed && !seen {
			seen = true
			continue
		}
		bad = append(bad, line)
	}
	return strings.Join(bad, "\n")
}

// systemdVersion returns the major version systemd-analyze reports.
func systemdVersion(t *testing.T, analyze string) int {
	t.Helper()
	out, err := exec.Command(analyze, "--version").Output()
	if err != nil {
		t.Fatalf("systemd-analyze --version: %v", err)
	}
	var v int
	if _, err := fmt.Sscanf(string(out), "systemd %d", &v); err != nil {
		t.Fatalf("systemd-analyze --version: %q: %v", out, err)
	}
	return v
}

// execLine matches an Exec*= line: the setting, its prefixes, the binary
// and the arguments.
var execLine = regexp.MustCompile(`(?m)^(Exec[A-Za-z]+)=([-@:+!]*)(\S+)(.*)$`)

// rewriteExec points every Exec*= command at /bin/true and --config at
// config, keeping the other arguments.
func rewriteExec(t *testing.T, name string, unit []byte, config string) []byte {
	t.Helper()
	if n := len(regexp.MustCompile(`(?m)^ExecStart=`).FindAll(unit, -1)); n != 1 {
		t.Fatalf("%s has %d ExecStart= lines, want 1", name, n)
	}
	return execLine.ReplaceAllFunc(unit, func(line []byte) []byte {
		m := execLine.FindSubmatch(line)
		args := regexp.MustCompile(`--config\s+\S+`).ReplaceAllLiteralString(string(m[4]), "--config "+config)
		return []byte(string(m[1]) + "=" + string(m[2]) + "/bin/true" + args)
	})
}

// TestUnitsSettings checks the settings the units are built around, and
// that the units and baton.toml agree.
func TestUnitsSettings(t *testing.T) {
	socket := readUnit(t, "app.socket")
	service := readUnit(t, "app.service")
	variant := readUnit(t, notifyReloadUnit)
	config := readTOML(t, "baton.toml")

	for _, c := range []struct {
		unit      map[string][]string
		name, key string
		want      string
	}{
		{socket, "app.socket", "FileDescriptorName", "http"},
		// baton binds a socket per worker beside it (worker.balance =
		// "auto" takes reuseport).
		{socket, "app.socket", "ReusePort", "yes"},
		{service, "app.service", "Type", "notify"},
		{service, "app.service", "NotifyAccess", "all"},
		{service, "app.service", "ExecStart", "/usr/local/bin/baton run --config /etc/app/baton.toml"},
		// baton reload finds the control socket through $RUNTIME_DIRECTORY.
		{service, "app.service", "ExecReload", "/usr/local/bin/baton reload"},
		{service, "app.service", "KillMode", "mixed"},
		{service, "app.service", "Restart", "on-failure"},
		{service, "app.service", "Requires", "app.socket"},
		{service, "app.service", "After", "app.socket"},
		{service, "app.service", "RuntimeDirectory", "app"},
		{service, "app.service", "NoNewPrivileges", "yes"},
		{service, "app.service", "ProtectSystem", "strict"},
		{service, "app.service", "ProtectHome", "yes"},
		{service, "app.service", "PrivateTmp", "yes"},
		{service, "app.service", "StateDirectory", "app"},
		{service, "app.service", "WorkingDirectory", "/var/lib/app"},
		{service, "app.service", "LimitNOFILE", "524288"},
		{service, "app.service", "MemoryDenyWriteExecute", "yes"},
		// reuseport's socket per worker beside app.socket and its eBPF dealer.
		{service, "app.service", "CapabilityBoundingSet", "CAP_BPF CAP_NET_BIND_SERVICE"},
		{service, "app.service", "SystemCallFilter", "@system-service bpf"},
		// baton pings from its event loop at half of it
		// (TestSystemdWatchdog runs it at 2s under load).
		{service, "app.service", "WatchdogSec", "10"},
		{variant, notifyReloadUnit, "Type", "notify-reload"},
		{variant, notifyReloadUnit, "WatchdogSec", "10"},
	} {
		if got := c.unit[c.key]; len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: %s=%q, want %q", c.name, c.key, got, c.want)
		}
	}
	// A watchdog of a few seconds would restart a healthy baton that a
	// loaded machine delays (the ping comes every WatchdogSec/2).
	for name, unit := range map[string]map[string][]string{"app.service": service, notifyReloadUnit: variant} {
		v := strings.Join(unit["WatchdogSec"], "")
		if n, err := strconv.Atoi(v); err != nil || n < 5 {
			t.Errorf("%s: WatchdogSec=%q, want whole seconds, at least 5", name, v)
		}
	}

	// The notify-reload variant is app.service but for how reloads are
	// asked for: systemd sends SIGHUP itself (the default ReloadSignal=,
	// baton's reload signal), so no ExecReload=.
	if v, ok := variant["ExecReload"]; ok {
		t.Errorf("%s: ExecReload=%q: Type=notify-reload reloads by signal", notifyReloadUnit, v)
	}
	if v, ok := variant["ReloadSignal"]; ok && (len(v) != 1 || (v[0] != "SIGHUP" && v[0] != "HUP")) {
		t.Errorf("%s: ReloadSignal=%q: baton reloads on SIGHUP", notifyReloadUnit, v)
	}
	for key, want := range service {
		if key == "Type" || key == "ExecReload" {
			continue
		}
		if got := variant[key]; !slices.Equal(got, want) {
			t.Errorf("%s: %s=%q, app.service has %q", notifyReloadUnit, key, got, want)
		}
	}
	for key, got := range variant {
		if _, ok := service[key]; !ok && key != "ReloadSignal" {
			t.Errorf("%s: %s=%q, not in app.service", notifyReloadUnit, key, got)
		}
	}

	if got, want := config["name"], socket["FileDescriptorName"]; len(want) != 1 || got != want[0] {
		t.Errorf("baton.toml listen name %q, app.socket FileDescriptorName=%q", got, want)
	}
	if got, want := config["address"], socket["ListenStream"]; len(want) != 1 || got != "tcp://"+want[0] {
		t.Errorf("baton.toml listen address %q, app.socket ListenStream=%q", got, want)
	}
	// baton status --config /etc/app/baton.toml finds the control socket
	// that systemd makes room for.
	if got, want := config["socket"], "/run/"+strings.Join(service["RuntimeDirectory"], "")+"/baton.sock"; got != want {
		t.Errorf("baton.toml control socket %q, want %q (in app.service's RuntimeDirectory=)", got, want)
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
	// TimeoutStartSec= also bounds a reload (ExecReload=, or the wait for
	// READY=1 after SIGHUP): past it systemd fails the reload, and
	// Restart=on-failure restarts the service, so baton's own reload.timeout
	// must end first.
	reload := 60 * time.Second // baton's default reload.timeout
	if v, ok := config["timeout"]; ok {
		if reload, err = time.ParseDuration(v); err != nil {
			t.Fatalf("baton.toml timeout: %v", err)
		}
	}
	start := 90 * time.Second // systemd's default TimeoutStartSec=
	if v, ok := service["TimeoutStartSec"]; ok {
		n, err := strconv.Atoi(strings.Join(v, ""))
		if err != nil {
			t.Fatalf("app.service TimeoutStartSec=%q: want whole seconds: %v", v, err)
		}
		start = time.Duration(n) * time.Second
	}
	if reload >= start {
		t.Errorf("baton.toml reload timeout %v is not below app.service TimeoutStartSec= %v", reload, start)
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
