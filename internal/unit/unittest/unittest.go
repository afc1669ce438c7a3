package unittest

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// MaxExposure is the highest score of `systemd-analyze security` that
// baton's units may have ("OK" ends at 4.9; 2.5 leaves room for the
// capabilities and the host network a supervisor of network services needs).
const MaxExposure = 2.5

var overall = regexp.MustCompile(`(?m)^→ Overall exposure level for \S+: (\d+\.\d+) `)

// Exposure returns the overall exposure level `systemd-analyze security
// --offline=yes` gives the unit file at path (0.0 sandboxed to 10.0 not
// at all), skipping the test if systemd-analyze is not installed.
func Exposure(t *testing.T, path string) float64 {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, analyze, "security", "--offline=yes", "--no-pager", path).CombinedOutput()
	score, perr := ParseExposure(string(out))
	if perr != nil {
		t.Fatalf("systemd-analyze security --offline=yes %s: %v, %v\n%s", path, err, perr, out)
	}
	return score
}

// ParseExposure returns the score on the "Overall exposure level" line
// of systemd-analyze security's output.
func ParseExposure(out string) (float64, error) {
	m := overall.FindAllStringSubmatch(out, -1)
	if len(m) != 1 {
		return 0, fmt.Errorf("unittest: %d overall exposure lines, want 1", len(m))
	}
	return strconv.ParseFloat(m[0][1], 64)
}
