package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/cpulimit"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "baton.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const good = `
[[listen]]
name = "http"
address = "tcp://127.0.0.1:8080"

[[listen]]
name = "sock"
address = "unix:///run/app.sock"

[worker]
command = ["/usr/bin/app", "--flag"]
count = 3
ready = "delay:500ms"
drain_timeout = "10s"
env = { APP_ENV = "prod" }

[reload]
timeout = "5s"
`

func TestLoadGood(t *testing.T) {
	c, _, err := FromArgs([]string{"--config", writeFile(t, good)}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Listen) != 2 || c.Listen[0].Network != "tcp" || c.Listen[0].Addr != "127.0.0.1:8080" ||
		c.Listen[1].Network != "unix" || c.Listen[1].Addr != "/run/app.sock" {
		t.Errorf("listeners = %+v", c.Listen)
	}
	w := c.Worker
	if w.Count != 3 || w.ReadyDelay != 500*time.Millisecond || w.DrainTimeout.Std() != 10*time.Second ||
		w.Env["APP_ENV"] != "prod" || w.Command[1] != "--flag" || c.Reload.Timeout.Std() != 5*time.Second {
		t.Errorf("worker = %+v reload = %+v", w, c.Reload)
	}
}

func TestReadyFD(t *testing.T) {
	c, _, err := FromArgs([]string{"--listen", "http=tcp://127.0.0.1:0", "--ready", "fd", "--", "app"}, io.Discard)
	if err != nil || c.Worker.Ready != ReadyFD || c.Worker.ReadyDelay != 0 {
		t.Fatalf("--ready fd: %+v, %v", c, err)
	}
}

func TestDefaults(t *testing.T) {
	c, _, err := FromArgs([]string{"--listen", "http=tcp://127.0.0.1:0", "--", "app"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Worker.Count != cpulimit.CPUs() || c.Worker.Ready != "notify" ||
		c.Worker.DrainTimeout.Std() != DefaultDrainTimeout || c.Reload.Timeout.Std() != DefaultReloadTimeout ||
		c.Worker.Balance != BalanceAuto || c.Worker.ChannelTimeout.Std() != DefaultChannelTimeout {
		t.Errorf("defaults not applied: %+v %+v", c.Worker, c.Reload)
	}
}

func TestFlagsOverrideFile(t *testing.T) {
	c, _, err := FromArgs([]string{"--config", writeFile(t, good), "--workers", "7", "--ready", "notify",
		"--drain-timeout", "1s", "--balance", "round-robin", "--listen", "api=tcp6://[::1]:9000", "--", "other", "arg"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Worker.Count != 7 || c.Worker.Ready != "notify" || c.Worker.DrainTimeout.Std() != time.Second || c.Worker.Balance != BalanceRoundRobin ||
		len(c.Listen) != 1 || c.Listen[0].Name != "api" || c.Listen[0].Addr != "[::1]:9000" ||
		strings.Join(c.Worker.Command, " ") != "other arg" {
		t.Errorf("flags did not override: %+v %+v", c.Worker, c.Listen)
	}
}

// argsError returns the error of FromArgs for args, after --config with
// a file of body when body is not empty; none fails the test.
func argsError(t *testing.T, body string, args []string) error {
	t.Helper()
	if body != "" {
		args = append([]string{"--config", writeFile(t, body)}, args...)
	}
	_, _, err := FromArgs(args, io.Discard)
	if err == nil {
		t.Fatal("no error")
	}
	return err
}

// Every bad input gives one line naming the key and where it was set.
func TestErrorsNameKeyAndLine(t *testing.T) {
	tests := []struct {
		name string
		file string   // "" = no file
		args []string // after --config
		want string
	}{
		{"unknown key", "[worker]\ncommand = [\"a\"]\ncuont = 3\n", nil, "baton.toml:3: worker.cuont: unknown key"},
		{"unknown table", "[wrker]\n", nil, "baton.toml:1: wrker: unknown key"},
		{"wrong type", "[worker]\ncount = \"four\"\n", nil, "baton.toml:2: worker.count:"},
		{"bad duration", "[worker]\ndrain_timeout = \"10 seconds\"\n", nil, "baton.toml:2: worker.drain_timeout: "},
		{"syntax", "[worker\n", nil, "baton.toml:1:"},
		{"negative count", "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\n\ncount = -1\n", nil,
			"baton.toml:7: worker.count: must be at least 1, got -1"},
		{"bad ready", "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\nready = \"soon\"\n", nil,
			"baton.toml:6: worker.ready: \"soon\""},
		{"bad balance", "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\nbalance = \"random\"\n", nil,
			`baton.toml:6: worker.balance: "random": want "auto", "shared", "reuseport" or "round-robin"`},
		{"flag balance", "", []string{"--listen", "h=tcp://127.0.0.1:1", "--balance", "rr", "--", "a"}, `config: flag --balance: worker.balance: "rr": want`},
		{"bad scheme", "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[[listen]]\nname=\"x\"\naddress = \"sctp://a:1\"\n[worker]\ncommand=[\"a\"]\n", nil,
			"baton.toml:6: listen[1].address: \"sctp://a:1\": unknown scheme"},
		{"duplicate name", "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[[listen]]\nname = \"h\"\naddress=\"tcp://127.0.0.1:2\"\n[worker]\ncommand=[\"a\"]\n", nil,
			"baton.toml:5: listen[1].name: \"h\" is used by two listeners"},
		{"missing address", "[[listen]]\nname=\"h\"\n[worker]\ncommand=[\"a\"]\n", nil, "baton.toml:1: listen[0].address: is required"},
		{"no command", "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n", nil, "worker.command: is required"},
		{"no listener", "", []string{"--", "app"}, "config: listen: at least one listener is required"},
		{"flag workers", "", []string{"--listen", "h=tcp://127.0.0.1:1", "--workers", "0", "--", "a"}, "config: flag --workers: \"0\""},
		{"flag listen", "", []string{"--listen", "tcp://127.0.0.1:1", "--", "a"}, "config: flag --listen: \"tcp://127.0.0.1:1\": want NAME=URL"},
		{"flag listen url", "", []string{"--listen", "h=127.0.0.1:1", "--", "a"}, "config: flag --listen: listen[0].address:"},
		{"flag drain", "", []string{"--listen", "h=tcp://127.0.0.1:1", "--drain-timeout", "x", "--", "a"}, "config: flag --drain-timeout: \"x\""},
		{"integer duration", "[worker]\ncommand = [\"a\"]\ndrain_timeout = 30\n", nil, `baton.toml:3: worker.drain_timeout: 30 has no unit: write "30s"`},
		{"metrics no port", "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\n[control]\nmetrics = \"127.0.0.1\"\n", nil,
			`baton.toml:7: control.metrics: "127.0.0.1": want host:port, such as 127.0.0.1:9100`},
		{"flag metrics no host", "", []string{"--listen", "h=tcp://127.0.0.1:1", "--metrics", ":9100", "--", "a"},
			`config: flag --metrics: control.metrics: ":9100": name the address to listen on`},
		{"negative channel timeout", "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\nchannel_timeout = \"-1s\"\n", nil,
			`baton.toml:6: worker.channel_timeout: must not be negative, got -1s`},
		{"integer reload timeout", "[reload]\ntimeout = 60\n", nil, `baton.toml:2: reload.timeout: 60 has no unit: write "60s"`},
		{"integer stop delay", "[stop]\ndelay = 5\n", nil, `baton.toml:2: stop.delay: 5 has no unit: write "5s"`},
		{"negative stop delay", "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\n[stop]\ndelay = \"-1s\"\n", nil,
			`baton.toml:7: stop.delay: must not be negative, got -1s`},
		{"unknown stop key", "[stop]\ndelay = \"1s\"\ntimeout = \"1s\"\n", nil, "baton.toml:3: stop.timeout: unknown key"},
		{"flag stop delay", "", []string{"--listen", "h=tcp://127.0.0.1:1", "--stop-delay", "-2s", "--", "a"}, `config: flag --stop-delay: "-2s": want a duration such as 5s, or 0s for none`},
		{"float duration", "restart.window = 1.5\n", nil, `baton.toml:1: restart.window: 1.5 has no unit: write "1.5s"`},
		{"inline duration", "worker = { watchdog = 5 }\n", nil, `baton.toml:1: worker.watchdog: 5 has no unit: write "5s"`},
		{"hex duration", "[restart]\nbackoff_max = 0x10\n", nil, `baton.toml:2: restart.backoff_max: 0x10 has no unit: write a duration such as "30s"`},
		{"string duration", "[worker]\nwatchdog = \"5\"\n", nil, `baton.toml:2: worker.watchdog: 5 has no unit: write "5s"`},
		{"delay without unit", "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\nready = \"delay:500\"\n", nil,
			`baton.toml:6: worker.ready: "delay:500": 500 has no unit`},
		{"flag duration", "", []string{"--listen", "h=tcp://127.0.0.1:1", "--drain-timeout", "30", "--", "a"}, `config: flag --drain-timeout: 30 has no unit: write "30s"`},
		{"too many workers", "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\ncount = 100000\n", nil,
			"baton.toml:6: worker.count: 100000 is more than 1024 workers"},
		{"huge size", "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\nmax_memory = \"99999999999999999999T\"\n", nil,
			`baton.toml:6: worker.max_memory: size "99999999999999999999T" is too large`},
		{"duplicate key", "[worker]\ncount = 1\ncount = 2\n", nil, "baton.toml:3: worker.count: key count is already defined"},
		{"unknown flag", "", []string{"--wrokers", "2"}, "flag provided but not defined: -wrokers"},
		{"missing file", "", []string{"--config", "/nonexistent/baton.toml"}, "config: open /nonexistent/baton.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := argsError(t, tt.file, tt.args)
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not contain %q", msg, tt.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if tt.name != "missing file" && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q is not ErrInvalid", msg)
			}
		})
	}
}

// stop.delay is 0 unless set; the flag overrides the file, with 0s too.
func TestStopDelay(t *testing.T) {
	const file = "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\n[stop]\ndelay = \"3s\"\n"
	for _, tt := range []struct {
		name string
		args []string
		want time.Duration
	}{
		{"default", []string{"--listen", "h=tcp://127.0.0.1:1", "--", "a"}, 0},
		{"flag", []string{"--listen", "h=tcp://127.0.0.1:1", "--stop-delay", "2500ms", "--", "a"}, 2500 * time.Millisecond},
		{"file", []string{"--config", writeFile(t, file)}, 3 * time.Second},
		{"flag over file", []string{"--config", writeFile(t, file), "--stop-delay", "0s"}, 0},
	} {
		c, _, err := FromArgs(tt.args, io.Discard)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
		} else if got := c.Stop.Delay.Std(); got != tt.want {
			t.Errorf("%s: stop.delay %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestParseAddress(t *testing.T) {
	tests := []struct{ in, network, addr string }{
		{"tcp://127.0.0.1:80", "tcp", "127.0.0.1:80"},
		{"tcp4://0.0.0.0:80", "tcp4", "0.0.0.0:80"},
		{"tcp6://[::1]:80", "tcp6", "[::1]:80"},
		{"tcp://:80", "tcp", ":80"},
		{"udp://127.0.0.1:53", "udp", "127.0.0.1:53"},
		{"unix:///run/a.sock", "unix", "/run/a.sock"},
	}
	for _, tt := range tests {
		n, a, err := ParseAddress(tt.in)
		if err != nil || n != tt.network || a != tt.addr {
			t.Errorf("ParseAddress(%q) = %q, %q, %v; want %q, %q", tt.in, n, a, err, tt.network, tt.addr)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:80", "tcp://127.0.0.1", "tcp://h:99999", "unix://relative/path", "tcp://h:1/path", "http://h:1"} {
		if _, _, err := ParseAddress(bad); err == nil {
			t.Errorf("ParseAddress(%q) accepted", bad)
		}
	}
}

// A duration of 0 needs no unit: it is 0 in every unit.
func TestZeroDurationWithoutUnit(t *testing.T) {
	c, err := Parse("b.toml", []byte("[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\nwatchdog = 0\n"))
	if err == nil {
		err = c.Validate()
	}
	if err != nil || c.Worker.Watchdog != 0 {
		t.Fatalf("watchdog = 0: %v, %v", c, err)
	}
}

func TestRestartAndSizes(t *testing.T) {
	c, err := Parse("b.toml", []byte("[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\nmax_memory = \"1.5GiB\"\nwatchdog = \"2s\"\n[restart]\nlimit = 3\nbackoff_min = \"10ms\"\non_giveup = \"degrade\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	r := c.Restart
	if c.Worker.MaxMemory != 3<<29 || c.Worker.Watchdog.Std() != 2*time.Second || r.Limit != 3 ||
		r.BackoffMin.Std() != 10*time.Millisecond || r.BackoffMax.Std() != DefaultBackoffMax ||
		r.Window.Std() != DefaultRestartWindow || r.StableAfter.Std() != DefaultStableAfter || r.OnGiveUp != "degrade" {
		t.Errorf("got worker %+v restart %+v", c.Worker, r)
	}
	for in, want := range map[string]int64{"100": 100, "1k": 1024, "2M": 2 << 20, "512MiB": 512 << 20, "1GB": 1 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1", "10 parsecs", "8EiB", "9223372036854775807", "1e400"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	for body, want := range map[string]string{
		"[restart]\non_giveup = \"panic\"\n":                      "b.toml:11: restart.on_giveup: \"panic\"",
		"[restart]\nbackoff_min = \"2s\"\nbackoff_max = \"1s\"\n": "restart.backoff_max: 1s is below restart.backoff_min 2s",
		"[restart]\nlimit = -1\n":                                 "b.toml:11: restart.limit: must not be negative",
	} {
		c, err := Parse("b.toml", []byte("[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\n\n\n\n\n"+body))
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", body, err, want)
		}
	}
}

func TestFileOf(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", "a.toml"}, "a.toml"},
		{[]string{"-config=/etc/app/baton.toml", "--workers", "2"}, "/etc/app/baton.toml"},
		{[]string{"--listen", "http=tcp://127.0.0.1:80", "--log-format", "json", "--config", "../b.toml", "--", "./server", "--config", "x"}, "../b.toml"},
		{[]string{"--listen", "http=tcp://127.0.0.1:80", "--", "./server", "--config", "x"}, ""},
		{[]string{"--config", "a.toml", "--config", "b.toml"}, "b.toml"},
		{[]string{"--no-such-flag", "--config", "a.toml"}, ""},
		{nil, ""},
	} {
		if got := FileOf(tt.args); got != tt.want {
			t.Errorf("FileOf(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}

// A value, key or flag of any size is quoted by a short prefix and its
// length: the error stays one short line.
func TestLongValuesQuotedShort(t *testing.T) {
	// As long as a file may hold one (twice, for a duplicate key).
	long := strings.Repeat("v", MaxFileSize/2-100)
	head := "[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\n"
	for _, tt := range []struct {
		name string
		args []string // after the file, if any
		file string
		want string
	}{
		{"unknown key", nil, head + long + " = 1\n", "worker.vvvv"},
		{"unknown table", nil, "[" + long + "]\n", "vvvv"},
		{"duplicate key", nil, head + long + " = 1\n" + long + " = 2\n", "already defined"},
		{"bare number", nil, head + "watchdog = " + strings.Repeat("1", MaxFileSize/2) + "\n", `has no unit: write a duration such as "30s"`},
		{"duration", nil, head + "watchdog = \"" + long + "\"\n", "not a duration"},
		{"size", nil, head + "max_memory = \"" + long + "\"\n", "not a size"},
		{"ready", nil, head + "ready = \"" + long + "\"\n", "worker.ready"},
		{"balance", nil, head + "balance = \"" + long + "\"\n", "worker.balance"},
		{"env name", nil, head + "env = { \"" + long + "=\" = \"x\" }\n", "is not a valid variable name"},
		{"listener name", nil, "[[listen]]\nname=\"" + long + ":\"\naddress=\"tcp://127.0.0.1:1\"\n[worker]\ncommand=[\"a\"]\n", "listen[0].name"},
		{"address", nil, "[[listen]]\nname=\"h\"\naddress=\"tcp://" + long + "\"\n[worker]\ncommand=[\"a\"]\n", "listen[0].address"},
		{"metrics", nil, head + "[control]\nmetrics = \"" + long + "\"\n", "control.metrics"},
		{"socket", nil, head + "[control]\nsocket = \"/" + long + "\"\n", "control.socket"},
		{"flag listen", []string{"--listen", long, "--", "a"}, "", "flag --listen"},
		{"flag workers", []string{"--listen", "h=tcp://127.0.0.1:1", "--workers", long, "--", "a"}, "", "flag --workers"},
		{"flag log format", []string{"--log-format", long}, "", "flag --log-format"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg := argsError(t, tt.file, tt.args).Error()
			if len(msg) > 512 || strings.Contains(msg, "\n") || !strings.Contains(msg, tt.want) || !strings.Contains(msg, " bytes)") {
				t.Errorf("error of %d bytes: %.300q; want one line of at most 512 bytes containing %q and a marked prefix", len(msg), msg, tt.want)
			}
		})
	}
}

// ReadFile refuses what is not a regular file without blocking or
// reading it, and a file past MaxFileSize; a file of exactly the limit
// is read.
func TestReadFileRefusesWhatIsNoConfig(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	sized := func(name string, n int64) string {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err == nil {
			err = f.Truncate(n)
			f.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tt := range []struct{ name, path, want string }{
		{"fifo", fifo, "not a regular file but a FIFO"},
		{"dev-zero", "/dev/zero", "not a regular file but a character device"},
		{"symlink to dev-zero", zero, "not a regular file but a character device"},
		{"directory", dir, "not a regular file but a directory"},
		{"100MB", sized("big", 100<<20), "104857600 bytes, more than the 256 KiB a configuration file may have"},
		{"one byte over", sized("over", MaxFileSize+1), "262145 bytes, more than the 256 KiB"},
		{"missing", filepath.Join(dir, "none"), "no such file or directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := ReadFile(tt.path)
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				// Let the blocked open go, so that the goroutine ends.
				if fd, err := syscall.Open(fifo, syscall.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					syscall.Close(fd)
				}
				t.Fatalf("ReadFile(%s) still blocked after 10s", tt.path)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "config: ") || !strings.Contains(err.Error(), tt.path) {
				t.Errorf("ReadFile(%s) = %v; want an error naming the file and saying %q", tt.path, err, tt.want)
			}
		})
	}
	if b, err := ReadFile(sized("limit", MaxFileSize)); err != nil || len(b) != MaxFileSize {
		t.Errorf("ReadFile of a file of exactly MaxFileSize: %d bytes, %v", len(b), err)
	}
}

// Validate refuses a command or environment exec would refuse, naming
// the key and the limit.
func TestExecLimits(t *testing.T) {
	one, all := execLimits()
	if one < 32*4096 || all < one || all > 6<<20 {
		t.Fatalf("execLimits() = %d, %d", one, all)
	}
	big := strings.Repeat("x", one)
	for _, tt := range []struct {
		name     string
		command  []string
		env      map[string]string
		base     []string
		one, all int
		want     string // "" for none
	}{
		{"fits", []string{"app", strings.Repeat("x", 99)}, map[string]string{"K": strings.Repeat("v", 97)}, nil, 100, 4096, ""},
		{"argument", []string{"app", strings.Repeat("x", 100)}, nil, nil, 100, 4096,
			"b.toml:6: worker.command[1]: 101 bytes: exec takes an argument of at most 100 bytes"},
		{"variable", []string{"app"}, map[string]string{"A": "1", "K": strings.Repeat("v", 98)}, nil, 100, 4096,
			"worker.env.K: 101 bytes as NAME=VALUE: exec takes a variable of at most 100 bytes"},
		{"long name", []string{"app"}, map[string]string{strings.Repeat("N", 200): ""}, nil, 100, 4096,
			"worker.env.NNNN"},
		{"all", []string{"app", strings.Repeat("x", 90)}, map[string]string{"K": strings.Repeat("v", 90)}, []string{strings.Repeat("b", 90)}, 100, 1300,
			"worker.command: with worker.env and baton's own environment the worker's exec would take 1337 bytes, more than the 1300 it may"},
		{"real limit", []string{"app", big}, nil, nil, one, all, fmt.Sprintf("worker.command[1]: %d bytes: exec takes an argument of at most %d bytes", one+1, one)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("b.toml", []byte("[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n\n[worker]\ncommand=[\"app\"]\n"))
			if err != nil {
				t.Fatal(err)
			}
			c.Worker.Command, c.Worker.Env = tt.command, tt.env
			err = c.checkExec(tt.base, tt.one, tt.all)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || len(err.Error()) > 512):
				t.Errorf("error %v; want one containing %q", err, tt.want)
			}
		})
	}
	// Validate checks it too, for check, run and every reload.
	c, err := Parse("b.toml", []byte("[[listen]]\nname=\"h\"\naddress=\"tcp://127.0.0.1:1\"\n\n[worker]\ncommand=[\"app\", \""+big+"\"]\n"))
	if err == nil {
		err = c.Validate()
	}
	if err == nil || !strings.Contains(err.Error(), "worker.command[1]") || !errors.Is(err, ErrInvalid) {
		t.Errorf("Validate of a %d-byte argument: %v", len(big), err)
	}
}

// worker.command must name a program exec can run, looked up as
// exec-worker looks it up; the error names the key and what to do.
func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	exe, plain := filepath.Join(dir, "server"), filepath.Join(dir, "notes")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(plain, []byte("text\n"), 0o644)
	t.Setenv("PATH", "/nonexistent:relative:"+dir)
	for _, tt := range []struct {
		command []string
		env     map[string]string
		want    string // "" for none
	}{
		{[]string{exe}, nil, ""},
		{[]string{"server", "--port", "1"}, nil, ""},
		{[]string{"server"}, map[string]string{"PATH": "/usr/bin"}, `config: flag: worker.command: "server" is not in $PATH ("/usr/bin"): install it, or give its path`},
		{[]string{"no-such-server"}, nil, `config: flag: worker.command: "no-such-server" is not in $PATH ("/nonexistent:relative:` + dir + `"): install it, or give its path`},
		{[]string{dir + "/missing"}, nil, `config: flag: worker.command: "` + dir + `/missing" cannot be run: no such file or directory: give the path of an executable file`},
		{[]string{plain}, nil, `config: flag: worker.command: "` + plain + `" cannot be run: permission denied: give the path of an executable file`},
		{[]string{dir + "/"}, nil, `config: flag: worker.command: "` + dir + `/" cannot be run: is a directory: give the path of an executable file`},
	} {
		c := &Config{Worker: Worker{Command: tt.command, Env: tt.env}}
		c.setOrigin("worker.command", "flag")
		err := c.CheckCommand()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.command, err)
		case tt.want != "" && (err == nil || err.Error() != tt.want || !errors.Is(err, ErrInvalid)):
			t.Errorf("%q: %v, want %s", tt.command, err, tt.want)
		}
	}
}
