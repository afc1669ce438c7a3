package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/batonhq/baton/internal/control"
)

func TestSourceOf(t *testing.T) {
	all := naming{control: "c.sock", config: "a.toml", configSocket: "a.sock", pid: 42, envSocket: "env.sock", runtimeDir: "/run/app"}
	for _, tt := range []struct {
		name string
		n    naming
		want source
	}{
		{"--control wins over everything", all, fromControl},
		{"--config's control.socket", naming{config: "a.toml", configSocket: "a.sock", pid: 42, envSocket: "env.sock", runtimeDir: "/run/app"}, fromConfig},
		{"--config without control.socket wins over --pid and the environment", naming{config: "a.toml", pid: 42, envSocket: "env.sock", runtimeDir: "/run/app"}, fromConfigRun},
		{"a control.socket without --config counts for nothing", naming{configSocket: "a.sock", envSocket: "env.sock"}, fromEnv},
		{"--pid wins over the environment", naming{pid: 42, envSocket: "env.sock", runtimeDir: "/run/app"}, fromPID},
		{"a SERVICE wins over the environment", naming{service: "app", envSocket: "env.sock", runtimeDir: "/run/other"}, fromService},
		{"$BATON_SOCKET wins over $RUNTIME_DIRECTORY", naming{envSocket: "env.sock", runtimeDir: "/run/app"}, fromEnv},
		{"$RUNTIME_DIRECTORY (ExecReload=)", naming{runtimeDir: "/run/app"}, fromRuntimeDir},
		{"nothing: the one baton of this user", naming{}, fromUser},
	} {
		if got := sourceOf(tt.n); got != tt.want {
			t.Errorf("%s: sourceOf(%+v) = %d, want %d", tt.name, tt.n, got, tt.want)
		}
	}
}

func TestChoose(t *testing.T) {
	a := control.Instance{PID: 10, Control: "/run/baton/baton-10-1/baton.sock"}
	b := control.Instance{PID: 20, Control: "/run/baton/baton-20-2/baton.sock"}
	for _, tt := range []struct {
		found  []control.Instance
		config string
		want   int    // the pid chosen
		err    string // or the error
	}{
		{[]control.Instance{a}, "", 10, ""},
		{[]control.Instance{b}, "a.toml", 20, ""},
		{nil, "", 0, "no baton of uid 0 is running here, or none answers on a control socket: give --control PATH, --config FILE or --pid PID"},
		{nil, "a.toml", 0, "no running baton of uid 0 was started with --config a.toml (name another with --control PATH or --pid PID)"},
		{[]control.Instance{a, b}, "", 0, "2 batons are running: pid 10 (" + a.Control + "), pid 20 (" + b.Control + "): pick one with --pid PID"},
		{[]control.Instance{a, b}, "a.toml", 0, "2 batons were started with --config a.toml: pid 10 (" + a.Control + "), pid 20 (" + b.Control + "): pick one with --pid PID"},
	} {
		got, err := choose(tt.found, tt.config, 0)
		switch {
		case tt.err == "" && (err != nil || got.PID != tt.want):
			t.Errorf("choose(%v, %q) = %d, %v; want pid %d", tt.found, tt.config, got.PID, err, tt.want)
		case tt.err != "" && (err == nil || err.Error() != tt.err || strings.Contains(err.Error(), "\n")):
			t.Errorf("choose(%v, %q) = %d, %v; want the error %q", tt.found, tt.config, got.PID, err, tt.err)
		}
	}
}

func TestConflict(t *testing.T) {
	for _, tt := range []struct {
		n    naming
		want string // "" for none
	}{
		{naming{service: "app"}, ""},
		{naming{control: "c.sock", config: "a.toml", pid: 42}, ""},
		{naming{service: "app", envSocket: "env.sock", runtimeDir: "/run/x"}, ""},
		{naming{service: "app", control: "c.sock"}, `service "app" and --control name the baton twice: give one`},
		{naming{service: "app", config: "a.toml", pid: 42}, `service "app" and --config and --pid name the baton twice: give one`},
	} {
		err := conflict(tt.n)
		if got := fmt.Sprint(err); tt.want == "" && err != nil || tt.want != "" && got != tt.want {
			t.Errorf("conflict(%+v) = %v, want %q", tt.n, err, tt.want)
		}
	}
}

// A SERVICE is a name systemd could give a RuntimeDirectory=: never a
// path, nor one that climbs out of /run.
func TestServiceName(t *testing.T) {
	for arg, want := range map[string]string{
		"app":                    "app",
		"app.service":            "app",
		"my_app-2.v1":            "my_app-2.v1",
		"app@1.service":          "app@1",
		"":                       "",
		".service":               "",
		"..":                     "",
		"../etc":                 "",
		".hidden":                "",
		"a/b":                    "",
		"/run/app":               "",
		"-app":                   "",
		"app name":               "",
		"app\nx":                 "",
		"app\x00":                "",
		strings.Repeat("a", 201): "",
	} {
		got, err := serviceName(arg)
		switch {
		case want == "" && (err == nil || !strings.HasPrefix(err.Error(), "service ") || strings.Contains(err.Error(), "\n")):
			t.Errorf("serviceName(%q) = %q, %v; want a one-line error", arg, got, err)
		case want != "" && (err != nil || got != want):
			t.Errorf("serviceName(%q) = %q, %v; want %q", arg, got, err, want)
		}
	}
}

func TestServiceSocket(t *testing.T) {
	system, user := "/run/app/baton.sock", "/run/user/1000/app/baton.sock"
	candidates := []string{system, user}
	for _, tt := range []struct {
		sockets []string // the candidates that are sockets
		want    string
		err     string
	}{
		{[]string{system}, system, ""},
		{[]string{user}, user, ""},
		{nil, "", "no baton of service app: no control socket at /run/app/baton.sock or /run/user/1000/app/baton.sock (is app.service running, with RuntimeDirectory=app? else give --control PATH)"},
		{[]string{system, user}, "", "service app: control sockets at both /run/app/baton.sock and /run/user/1000/app/baton.sock: give --control PATH"},
	} {
		isSocket := func(p string) bool { return slices.Contains(tt.sockets, p) }
		got, err := serviceSocket("app", candidates, isSocket)
		switch {
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("sockets %v: %q, %v; want %q", tt.sockets, got, err, tt.want)
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("sockets %v: %q, %v; want the error %q", tt.sockets, got, err, tt.err)
		case tt.sockets == nil && !errors.Is(err, errNoService):
			t.Errorf("no socket: %v is not errNoService (exit 1)", err)
		}
	}
	// The unit baton unit writes names the socket looked for first.
	if got := control.ServiceSocket("/run", "app"); got != system {
		t.Errorf("control.ServiceSocket(/run, app) = %q, want %q", got, system)
	}
}

// A command's operands: [SERVICE], and its argument when it takes one.
func TestSplitOperands(t *testing.T) {
	status, scale := control.Lookup("status"), control.Lookup("scale")
	for _, tt := range []struct {
		c                 *control.Command
		ops               []string
		service, arg, err string
	}{
		{status, nil, "", "", ""},
		{status, []string{"app"}, "app", "", ""},
		{status, []string{"app", "x"}, "", "", `unexpected argument "x": baton status takes a service's name at most (baton status -h lists its flags)`},
		{scale, []string{"4"}, "", "4", ""},
		{scale, []string{"app", "-1"}, "app", "-1", ""},
		{scale, nil, "", "", "no argument: want N|+N|-N (baton scale -h says more)"},
		{scale, []string{"app", "1", "2"}, "", "", `want [SERVICE] N|+N|-N, got 3 arguments: "app" "1" "2"`},
	} {
		service, arg, err := splitOperands(tt.c, tt.ops)
		if service != tt.service || arg != tt.arg || fmt.Sprint(err) != map[bool]string{true: "<nil>", false: tt.err}[tt.err == ""] {
			t.Errorf("baton %s %v: service %q, arg %q, %v; want %q, %q, %q", tt.c.Name, tt.ops, service, arg, err, tt.service, tt.arg, tt.err)
		}
	}
}
