package lifecycle

import (
	"testing"

	"github.com/batonhq/baton/internal/purecheck"
)

// TestNoIO keeps the Machine free of I/O: its files may import only
// packages that compute, and read no clock but Env's. Anything that
// touches the world goes through Env.
func TestNoIO(t *testing.T) {
	purecheck.NoIO(t, ".", "the Machine", []string{
		"cmp", "errors", "fmt", "log/slog", "maps", "slices", "strconv", "strings", "time",
		"github.com/batonhq/baton/internal/config", "github.com/batonhq/baton/internal/excerpt",
	})
}
