package integration

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/integration/nspawn"
	"github.com/batonhq/baton/loadtest"
)

// The service `baton unit` writes, sandboxed as it is (as root: CAP_BPF,
// CAP_NET_BIND_SERVICE and bpf() only), serves under load through a
// `systemctl reload` with no failed request, its workers start at the
// unit's soft RLIMIT_NOFILE, and baton sees which connections an old
// worker has not read yet before it signals it. The worker is a shell
// that records its own limits and then becomes hello: a Go worker would
// raise its soft limit to the hard one itself and hide what it was
// given. (Whether the eBPF dealer loads is not asserted: nspawn's own
// seccomp filter refuses bpf() to everything in the container,
// sandboxed or not.)
func TestSystemdUnitSandboxedReload(t *testing.T) {
	if err := nspawn.Available(); err != nil {
		t.Skip(err)
	}
	ctx := withTimeout(t, 3*time.Minute)
	m, _ := bootWithBinaries(t, ctx)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	worker := `cat /proc/self/limits > "$RUNTIME_DIRECTORY/limits-$$" && exec ` + optDir + `/hello`
	out, err := m.Run(ctx, optDir+"/baton", "unit", "app", "--listen", "http=tcp://"+addr, "--baton", optDir+"/baton", "--install", "--", "/bin/sh", "-c", worker)
	if err != nil {
		t.Fatalf("baton unit app --install: %v\n%s", err, out)
	}
	if _, err := m.Systemctl(ctx, "start", "app.socket", "app.service"); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitActive(ctx, "app.service"); err != nil {
		t.Fatal(err)
	}

	g := startLoad(t, addr, loadtest.PerRequest, 16)
	if out, err := m.Systemctl(ctx, "reload", "app.service"); err != nil {
		t.Fatalf("systemctl reload app: %v\n%s", err, out)
	}
	if err := m.WaitActive(ctx, "app.service"); err != nil {
		t.Fatal(err)
	}
	waitServed(t, g, 500)
	if r := g.Stop(); r.Failed() != 0 || len(r.PIDs) < 2 {
		t.Errorf("through a reload of the sandboxed unit: %s, want no failure, answers from the workers %v", r, r.Samples)
	} else {
		t.Logf("through a reload of the sandboxed unit: %s", r)
	}
	if status, _ := m.Show(ctx, "app.service", "StatusText"); !strings.Contains(status, "generation 2") {
		t.Errorf("StatusText = %q after the reload, want generation 2", status)
	}
	// Before it signals an old worker, baton asks sock_diag (a netlink
	// socket) whether it has accepted connections it has not read yet.
	if j := m.Journal(ctx, "app.service"); strings.Contains(j, unservedBlind) {
		t.Errorf("the sandbox keeps baton from seeing a worker's unread connections:\n%s", j)
	}

	// systemd caps the unit's limit at the hard limit it has itself (the
	// container's is this test's); baton's own hard limit is what it got.
	unit, err := m.Show(ctx, "app.service", "LimitNOFILESoft")
	if err != nil || unit == "" || unit == "1024" {
		t.Fatalf("app.service LimitNOFILESoft=%q, %v: want it raised", unit, err)
	}
	pid, err := m.MainPID(ctx, "app.service")
	if err != nil {
		t.Fatal(err)
	}
	own, err := m.Run(ctx, "cat", fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatalf("baton's limits: %v\n%s", err, own)
	}
	hard := nofile.FindStringSubmatch(own)
	if hard == nil {
		t.Fatalf("no open files limit in baton's limits:\n%s", own)
	}
	want := unit
	if a, b := atoi(t, unit), atoi(t, hard[2]); b < a {
		want = hard[2]
	}
	limits, err := m.Run(ctx, "sh", "-c", "cat /run/app/limits-*")
	if err != nil {
		t.Fatalf("the workers' limits: %v\n%s", err, limits)
	}
	soft := nofile.FindAllStringSubmatch(limits, -1)
	if len(soft) < 4 { // two workers in each of two generations
		t.Fatalf("the limits of %d workers, want 4:\n%s", len(soft), limits)
	}
	for _, s := range soft {
		if s[1] != want || s[1] == "1024" {
			t.Errorf("a worker's soft RLIMIT_NOFILE is %s, want the unit's %s (LimitNOFILE=%s, baton's hard limit %s)", s[1], want, unit, hard[2])
		}
	}
}

// unservedBlind is what baton logs when sock_diag is refused to it.
const unservedBlind = "cannot see a worker's unread connections"

// nofile matches the soft and hard limit of open files in /proc/PID/limits.
var nofile = regexp.MustCompile(`(?m)^Max open files\s+(\d+)\s+(\d+)\s`)

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}
