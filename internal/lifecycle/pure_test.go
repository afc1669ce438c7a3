package lifecycle

import (
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestNoIO keeps the Machine free of I/O: its files may import only
// packages that compute, and read no clock but Env's. Anything that
// touches the world goes through Env.
func TestNoIO(t *testing.T) {
	allowed := map[string]bool{
		"cmp": true, "errors": true, "fmt": true, "log/slog": true, "maps": true, "slices": true, "strconv": true, "strings": true, "time": true,
		"github.com/batonhq/baton/internal/config": true, "github.com/batonhq/baton/internal/excerpt": true,
	}
	ents, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, clock := range []string{"time.Now(", "time.Since(", "time.Until(", "time.After", "time.Sleep(", "time.NewTimer(", "time.NewTicker(", "time.Tick("} {
			if strings.Contains(string(src), clock) {
				t.Errorf("%s calls %s...: use Env's clock, so tests control it", name, clock)
			}
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !allowed[path] {
				t.Errorf("%s imports %s: the Machine does no I/O; act through Env instead", name, path)
			}
		}
	}
}
