package nspawn

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

//go:embed install.sh
var installScript string

// Install installs systemd-nspawn (Debian package systemd-container) when it
// is missing, by running install.sh: apt-get install, and apt-get update
// only if that first attempt fails. It does nothing when systemd-nspawn is
// installed already. Tests call Available and skip; CI may call Install.
func Install(ctx context.Context) error {
	if _, err := exec.LookPath("systemd-nspawn"); err == nil {
		return nil
	}
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("nspawn: install systemd-container: needs root (running as uid %d)", uid)
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", installScript, "install.sh")
	cmd.WaitDelay = waitDelay
	out, err := cmd.CombinedOutput()
	if err != nil {
		s := strings.TrimSpace(string(out))
		if len(s) > consoleTail {
			s = "..." + s[len(s)-consoleTail:]
		}
		return fmt.Errorf("nspawn: install systemd-container: %w: %s", err, s)
	}
	return nil
}
