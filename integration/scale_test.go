package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/batonhq/baton/internal/control"
)

// baton scale 4 holds through a reload and a self-upgrade (4 workers after
// each, and status says "scaled to 4, config 2"); a configuration whose
// worker.count changed then applies its own count.
func TestScaledCountHolds(t *testing.T) {
	u := startUpgradable(t, hellosUpTo("60s"))
	first := versionOf(t, bin.baton)
	want := func(what string, workers, config int) batonState {
		t.Helper()
		st := u.settle(t)
		if st.Workers != workers {
			t.Errorf("after %s: %d workers, want %d", what, st.Workers, workers)
		}
		code, out := ctl(t, "status", "--json", "--control", u.control)
		var s control.Status
		if err := json.Unmarshal([]byte(out), &s); code != 0 || err != nil {
			t.Fatalf("after %s: status --json: exit %d, %v: %s", what, code, err, out)
		}
		if s.TargetWorkers != workers || s.ConfigWorkers != config {
			t.Errorf("after %s: status says %d workers, config %d; want %d, config %d", what, s.TargetWorkers, s.ConfigWorkers, workers, config)
		}
		code, out = ctl(t, "status", "--control", u.control)
		if scaled := fmt.Sprintf("scaled to %d, config %d", workers, config); workers != config && !strings.Contains(out, scaled) {
			t.Errorf("after %s: status (exit %d) does not say %q:\n%s", what, code, scaled, out)
		}
		return st
	}
	if code, out := ctl(t, "scale", "4", "--control", u.control); code != 0 || !strings.Contains(out, "scale ok: generation 1 serving with 4 workers") {
		t.Fatalf("baton scale 4: exit %d: %s", code, out)
	}
	want("scale 4", 4, 2)
	if code, out := u.ctl(t, "reload"); code != 0 || !strings.Contains(out, "reload ok: generation 2 serving with 4 workers") {
		t.Fatalf("baton reload: exit %d: %s", code, out)
	}
	before := want("reload", 4, 2)
	from := u.out.len()
	pid, _ := u.upgradeBy(t, "baton upgrade", before) // 4 workers, said and served
	u.checkUpgraded(t, before, pid, first, from)
	want("upgrade", 4, 2)
	u.writeConfig(t, strings.Replace(upgradeConfig(u.addr, u.control, nil, "60s"), "count = 2", "count = 3", 1))
	if code, out := u.ctl(t, "reload"); code != 0 || !strings.Contains(out, "reload ok: generation 4 serving with 3 workers") {
		t.Fatalf("baton reload with worker.count = 3: exit %d: %s", code, out)
	}
	want("worker.count 3", 3, 3)
}
