package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The Grafana dashboard is valid JSON and every metric it queries is one
// docs/metrics.md documents. (contrib/kubernetes is checked by its own
// module, contrib/kubernetes/check, which make test runs.)
func TestContribGrafana(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "contrib", "grafana", "baton.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil || len(dash.Panels) == 0 {
		t.Fatalf("contrib/grafana/baton.json: %v, %d panels", err, len(dash.Panels))
	}
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range regexp.MustCompile(`baton_[a-z_]+`).FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(name, "_bucket")
				if !strings.Contains(string(doc), "`"+base) {
					t.Errorf("panel %q queries %s, which docs/metrics.md does not list", p.Title, name)
				}
			}
		}
	}
}
