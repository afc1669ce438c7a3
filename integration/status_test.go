package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/control"
)

// statusRows returns the pids and states of `baton status`'s worker rows.
func statusRows(t *testing.T, control string) (pids []int, states []string) {
	t.Helper()
	code, out := ctl(t, "status", "--control", control)
	if code != 0 {
		t.Fatalf("baton status: exit %d: %s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "baton pid ") || !strings.HasPrefix(lines[1], "slot  pid  ") {
		t.Fatalf("baton status printed no table:\n%s", out)
	}
	for _, l := range lines[2:] {
		f := strings.Fields(l)
		pid, err := strconv.Atoi(f[1])
		if err != nil {
			t.Fatalf("row %q: %v", l, err)
		}
		pids, states = append(pids, pid), append(states, f[3])
	}
	slices.Sort(pids)
	return pids, states
}

// `baton status` lists exactly the live workers, and new ones after a
// reload; `--json` has exactly the fields docs/control.md documents.
func TestStatusShowsLiveWorkers(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "ctl.sock")
	b := startBaton(t, "--workers", "2", "--control", socket, "--", bin.hello)
	pid := b.cmd.Process.Pid
	before, states := statusRows(t, socket)
	if live := children(pid); !slices.Equal(before, live) || !slices.Equal(states, []string{"ready", "ready"}) {
		t.Errorf("status lists %v %v, baton's children are %v", before, states, live)
	}
	if code, out := ctl(t, "reload", "--control", socket); code != 0 {
		t.Fatalf("reload: exit %d: %s", code, out)
	}
	// The old generation drains: wait until only the new one is left.
	b.out.waitFrom(0, regexp.MustCompile(`generation 1 drained`), 30*time.Second)
	after, states := statusRows(t, socket)
	if live := children(pid); !slices.Equal(after, live) || len(after) != 2 || slices.ContainsFunc(after, func(p int) bool { return slices.Contains(before, p) }) {
		t.Errorf("after a reload status lists %v %v, baton's children are %v, before %v", after, states, live, before)
	}

	code, out := ctl(t, "status", "--control", socket, "--json")
	if code != 0 {
		t.Fatalf("status --json: exit %d: %s", code, out)
	}
	var st control.Status
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil || st.PID != pid || st.Generation != 2 || len(st.Workers) != 2 || !st.Ready || st.LastReload == nil || !st.LastReload.OK {
		t.Errorf("status --json: %v: %+v", err, st)
	}
	// Every key printed is documented, and every documented key printed.
	var doc map[string]any
	json.Unmarshal([]byte(out), &doc)
	keys := map[string]bool{}
	for k := range doc {
		keys[k] = true
	}
	for _, w := range doc["workers"].([]any) {
		for k := range w.(map[string]any) {
			keys[k] = true
		}
	}
	md, err := os.ReadFile(filepath.Join(repoRoot, "docs", "control.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := md[bytes.Index(md, []byte("## Status")):bytes.Index(md, []byte("## Finding the socket"))]
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|").FindAllSubmatch(section, -1) {
		documented[string(m[1])] = true
	}
	for k := range keys {
		if !documented[k] {
			t.Errorf("status --json prints %q, which docs/control.md does not document", k)
		}
	}
	for k := range documented {
		if !keys[k] && k != "status" { // a worker's STATUS=, absent when it sent none
			t.Errorf("docs/control.md documents %q, which status --json does not print", k)
		}
	}
}

// `baton status --watch` into a pipe writes plain snapshots, a blank line
// apart, with no terminal escape in them, until interrupted (exit 0).
func TestStatusWatchIntoPipe(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "ctl.sock")
	startBaton(t, "--workers", "1", "--control", socket, "--", bin.hello)
	w := start(t, nil, bin.baton, "status", "--watch", "--control", socket)
	reHead := regexp.MustCompile(`^baton pid \d+ · `)
	w.out.waitCount(reHead, 2, 30*time.Second)
	if err := w.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := w.waitExit(10 * time.Second); code != 0 {
		t.Errorf("status --watch ended with exit %d on SIGINT, want 0", code)
	}
	<-w.out.done
	out := w.out.String()
	if strings.ContainsRune(out, '\x1b') {
		t.Errorf("status --watch wrote terminal escapes into a pipe:\n%q", out)
	}
	if !strings.Contains(out, "\n\nbaton pid ") {
		t.Errorf("status --watch did not separate its snapshots by a blank line:\n%s", out)
	}
}

// The status header names the configuration's file (and, under systemd,
// the unit, read from the cgroup: internal/systemd's TestUnitOf), so an
// operator with several batons sees which one answered.
func TestStatusNamesItsConfig(t *testing.T) {
	b := startConfigBaton(t, hellos(1, ""))
	code, out := ctl(t, "status", "--control", b.control, "--json")
	if code != 0 {
		t.Fatalf("status --json: exit %d: %s", code, out)
	}
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Config != b.cfgPath || st.Unit != "" && !strings.HasSuffix(st.Unit, ".service") {
		t.Errorf("status --json: %v: config %q, unit %q; want config %q", err, st.Config, st.Unit, b.cfgPath)
	}
	code, out = ctl(t, "status", "--control", b.control)
	if code != 0 || !strings.Contains(strings.SplitN(out, "\n", 2)[0], " · config "+b.cfgPath+" · ") {
		t.Errorf("status: exit %d, header does not name the config %s:\n%s", code, b.cfgPath, out)
	}
}
