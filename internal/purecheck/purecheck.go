// Package purecheck is for tests of the models that must do no I/O
// (internal/lifecycle, internal/steer): it checks that a package's files
// import only packages that compute and read no clock.
package purecheck

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// clocks are the calls that read or wait on the real clock.
var clocks = []string{"time.Now(", "time.Since(", "time.Until(", "time.After", "time.Sleep(", "time.NewTimer(", "time.NewTicker(", "time.Tick("}

// NoIO fails t for every non-test Go file in dir, but those named in
// except, that imports a package not in allowed or calls the clock.
// what names the model in the messages ("the Machine").
func NoIO(t testing.TB, dir, what string, allowed []string, except ...string) {
	t.Helper()
	ok := map[string]bool{}
	for _, p := range allowed {
		ok[p] = true
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") || slices.Contains(except, name) {
			continue
		}
		src, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, clock := range clocks {
			if strings.Contains(string(src), clock) {
				t.Errorf("%s calls %s...: take the time from Env or as an argument, so tests control it", name, clock)
			}
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !ok[path] {
				t.Errorf("%s imports %s: %s does no I/O; act through Env instead", name, path, what)
			}
		}
	}
}
