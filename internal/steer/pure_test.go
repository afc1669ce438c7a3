package steer

import (
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestNoIO keeps the model free of I/O: every file but kernel.go may
// import only packages that compute, and reads no clock. What touches
// the kernel goes through Env.
func TestNoIO(t *testing.T) {
	allowed := map[string]bool{
		"fmt": true, "log/slog": true, "slices": true, "time": true,
		"github.com/batonhq/baton/internal/lifecycle": true,
	}
	ents, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") || name == "kernel.go" {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, clock := range []string{"time.Now(", "time.Since(", "time.Until(", "time.After", "time.Sleep(", "time.NewTimer(", "time.NewTicker(", "time.Tick("} {
			if strings.Contains(string(src), clock) {
				t.Errorf("%s calls %s...: take the time as an argument, so tests control it", name, clock)
			}
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !allowed[path] {
				t.Errorf("%s imports %s: the model does no I/O; act through Env instead", name, path)
			}
		}
	}
}
