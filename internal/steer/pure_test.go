package steer

import (
	"testing"

	"github.com/batonhq/baton/internal/purecheck"
)

// TestNoIO keeps the model free of I/O: every file but kernel.go may
// import only packages that compute, and reads no clock. What touches
// the kernel goes through Env.
func TestNoIO(t *testing.T) {
	purecheck.NoIO(t, ".", "the model", []string{
		"fmt", "log/slog", "slices", "time",
		"github.com/batonhq/baton/internal/lifecycle",
	}, "kernel.go", "diag.go")
}
