package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The design lives in the repository: every file or folder that docs/
// names (in backquotes, as a path in the repo) exists.
func TestDocsNameExistingPaths(t *testing.T) {
	docs, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	// A repo path: starts with one of the top-level entries.
	tops, _ := os.ReadDir(repoRoot)
	var roots []string
	for _, e := range tops {
		roots = append(roots, regexp.QuoteMeta(e.Name()))
	}
	// Or any relative path to a file of a kind the repository holds, so
	// that a path left behind by a move is caught too.
	rePath := regexp.MustCompile("`((?:" + strings.Join(roots, "|") + ")(?:/[A-Za-z0-9_.-]+)*/?|[a-z][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_.-]+)+\\.(?:go|md|sh|toml|service|socket|js|py))`")
	for _, doc := range docs {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range rePath.FindAllStringSubmatch(string(b), -1) {
			n++
			if _, err := os.Stat(filepath.Join(repoRoot, m[1])); err != nil {
				t.Errorf("%s names %s, which does not exist", filepath.Base(doc), m[1])
			}
		}
		if n == 0 {
			t.Errorf("%s names no path of the repository", filepath.Base(doc))
		}
	}
}
