package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// dashboardPanels reads the Grafana dashboard's panels, failing the test
// if it is not valid JSON or has none.
func dashboardPanels(t *testing.T) []dashboardPanel {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "contrib", "grafana", "baton.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct{ Panels []dashboardPanel }
	if err := json.Unmarshal(b, &dash); err != nil || len(dash.Panels) == 0 {
		t.Fatalf("contrib/grafana/baton.json: %v, %d panels", err, len(dash.Panels))
	}
	return dash.Panels
}

// dashboardPanel is a panel of the Grafana dashboard: its title and
// queries.
type dashboardPanel struct {
	Title   string
	Targets []struct{ Expr string }
}

// The Grafana dashboard is valid JSON and every metric it queries is one
// docs/metrics.md documents. (contrib/kubernetes is checked by its own
// module, contrib/kubernetes/check, which make test runs.)
func TestContribGrafana(t *testing.T) {
	for _, p := range dashboardPanels(t) {
		for _, tg := range p.Targets {
			documented(t, fmt.Sprintf("panel %q", p.Title), tg.Expr)
		}
	}
}
