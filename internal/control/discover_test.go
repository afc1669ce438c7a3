package control

import (
	"slices"
	"testing"
)

// A system service's RuntimeDirectory= is under /run, a user's
// (systemctl --user) under $XDG_RUNTIME_DIR.
func TestServiceRunRoots(t *testing.T) {
	for xdg, want := range map[string][]string{
		"":               {"/run"},
		"/run":           {"/run"},
		"/run/user/1000": {"/run", "/run/user/1000"},
	} {
		t.Setenv("XDG_RUNTIME_DIR", xdg)
		if got := ServiceRunRoots(); !slices.Equal(got, want) {
			t.Errorf("XDG_RUNTIME_DIR=%q: %v, want %v", xdg, got, want)
		}
	}
	if got := ServiceSocket("/run/user/1000", "app"); got != "/run/user/1000/app/baton.sock" {
		t.Errorf("ServiceSocket = %q", got)
	}
}
