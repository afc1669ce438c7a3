package main

import (
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
