package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/supervisor"
)

// contrib/kubernetes' config is valid, its probes are baton's on the
// metrics port, its liveness probe waits for /livez's verdict, and its
// grace period is above the drain timeout; the
// Grafana dashboard is valid JSON and every metric it queries is one
// docs/metrics.md documents.
func TestContribKubernetesAndGrafana(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "contrib", "kubernetes", "app.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	y := string(b)
	// The ConfigMap's baton.toml: the block indented under "baton.toml: |".
	var toml strings.Builder
	in := false
	for _, line := range strings.Split(y, "\n") {
		switch {
		case strings.HasSuffix(line, "baton.toml: |"):
			in = true
		case in && (strings.HasPrefix(line, "    ") || line == ""):
			toml.WriteString(strings.TrimPrefix(line, "    ") + "\n")
		case in:
			in = false
		}
	}
	cfg, err := config.Parse("baton.toml", []byte(toml.String()))
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatalf("contrib/kubernetes' baton.toml: %v\n%s", err, toml.String())
	}
	if _, port, _ := strings.Cut(cfg.Control.Metrics, ":"); !strings.Contains(y, "containerPort: "+port) {
		t.Errorf("control.metrics %s is not a container port", cfg.Control.Metrics)
	}
	for _, probe := range []string{"path: /livez, port: metrics", "path: /readyz, port: metrics"} {
		if !strings.Contains(y, probe) {
			t.Errorf("contrib/kubernetes has no probe %q", probe)
		}
	}
	// The liveness probe waits for /livez's verdict: a kubelet that gives
	// up first turns a slow event loop into a restart.
	if m := regexp.MustCompile(`livenessProbe:\n(?:\s+.*\n)*?\s+timeoutSeconds: (\d+)`).FindStringSubmatch(y); m == nil {
		t.Error("contrib/kubernetes' livenessProbe has no timeoutSeconds (the default, 1 s, is shorter than /livez's)")
	} else if secs, _ := strconv.Atoi(m[1]); time.Duration(secs)*time.Second <= supervisor.LivezTimeout {
		t.Errorf("livenessProbe timeoutSeconds %d: want it above /livez's %v", secs, supervisor.LivezTimeout)
	}
	grace := regexp.MustCompile(`terminationGracePeriodSeconds: (\d+)`).FindStringSubmatch(y)
	if g, _ := strconv.Atoi(grace[1]); float64(g) <= cfg.Worker.DrainTimeout.Std().Seconds() || strings.Contains(y, "preStop:") {
		t.Errorf("terminationGracePeriodSeconds %s must be above drain_timeout %s, with no preStop hook", grace[1], cfg.Worker.DrainTimeout.Std())
	}

	b, err = os.ReadFile(filepath.Join(repoRoot, "contrib", "grafana", "baton.json"))
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
