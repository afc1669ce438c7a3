package integration

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/integration/nspawn"
	"github.com/batonhq/baton/internal/control"
)

// appConfig is where contrib's app.service reads its config. The
// container's root is a tmpfs, so a test can rewrite it there between
// reloads (the bound optDir is read-only).
const appConfig = "/etc/app/baton.toml"

// reloadApp is contrib's app.service running under a throw-away systemd,
// its config at appConfig.
type reloadApp struct {
	m      *nspawn.Machine
	addr   string
	config string // the valid config, as installed
	// bin is the host directory bound read-only at optDir: a file renamed
	// into it replaces /opt/baton/... inside at once, as a package
	// upgrade would.
	bin string
}

// stats asks baton for its counts over its control socket, reached from
// the host through the container's root.
func (a *reloadApp) stats(ctx context.Context) (*control.Stats, error) {
	path := fmt.Sprintf("/proc/%d/root/run/app/%s", a.m.Leader, control.SocketName)
	resp, err := control.Ask(ctx, path, control.Request{Command: "stats"})
	if err != nil {
		return nil, err
	}
	if resp.Stats == nil {
		return nil, fmt.Errorf("stats: no stats in %+v", resp)
	}
	return resp.Stats, nil
}

// settled waits until no reload runs and no old generation drains, and
// returns the serving workers' pids (baton's children, as seen inside).
func (a *reloadApp) settled(t *testing.T, ctx context.Context) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	var st *control.Stats
	var err error
	for {
		if st, err = a.stats(ctx); err == nil && !st.Reloading && st.Draining == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("baton never settled (no reload, nothing draining): %+v, %v", st, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	pid, err := a.m.MainPID(ctx, "app.service")
	if err != nil {
		t.Fatal(err)
	}
	out, err := a.m.Run(ctx, "ps", "-o", "pid=", "--ppid", strconv.Itoa(pid))
	if err != nil {
		t.Fatalf("workers of baton (pid %d): %v", pid, err)
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("ps: %q", out)
		}
		pids = append(pids, n)
	}
	slices.Sort(pids)
	if len(pids) != st.Workers {
		t.Fatalf("baton (pid %d) has children %v, but counts %d workers", pid, pids, st.Workers)
	}
	return pids
}

// status returns baton's STATUS= line as systemd shows it, and checks that
// `systemctl status` shows it too.
func (a *reloadApp) status(t *testing.T, ctx context.Context) string {
	t.Helper()
	text, err := a.m.Show(ctx, "app.service", "StatusText")
	if err != nil {
		t.Fatal(err)
	}
	out, err := a.m.Systemctl(ctx, "status", "--no-pager", "app.service")
	if err != nil {
		t.Fatalf("systemctl status app.service: %v\n%s", err, out)
	}
	if !strings.Contains(out, `Status: "`+text+`"`) {
		t.Errorf("systemctl status app.service does not show baton's status line %q:\n%s", text, out)
	}
	return text
}

// reStatus matches baton's status line (docs/architecture.md, "baton → systemd") for 2 workers.
var reStatus = regexp.MustCompile(`^2/2 workers ready, generation (\d+), \d+ restarts`)

func statusGeneration(t *testing.T, status string) int {
	t.Helper()
	m := reStatus.FindStringSubmatch(status)
	if m == nil {
		t.Fatalf("StatusText = %q, want baton's status line", status)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// `systemctl reload app` ×10 under load, in both modes: no request fails,
// baton (MainPID) stays, every reload brings new workers, and `systemctl
// status` shows the outcome in baton's status line. A SIGHUP sent to
// baton directly (RELOADING=1 ... READY=1 from baton, no ExecReload=)
// also brings the unit back to active.
func TestSystemdReloadUnderLoad(t *testing.T) {
	ctx := withTimeout(t, 5*time.Minute)
	a := bootApp(t, ctx, true)
	mainPID, err := a.m.MainPID(ctx, "app.service")
	if err != nil {
		t.Fatal(err)
	}
	gen := statusGeneration(t, a.status(t, ctx))
	const reloads = 10
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			before := a.settled(t, ctx)
			g := startLoad(t, a.addr, mode, 64)
			for i := 0; i < reloads; i++ {
				if out, err := a.m.Systemctl(ctx, "reload", "app.service"); err != nil {
					t.Fatalf("reload %d: %v\n%s", i+1, err, out)
				}
				// systemctl reload may return while still "reloading".
				if err := a.m.WaitActive(ctx, "app.service"); err != nil {
					t.Fatalf("after reload %d: %v", i+1, err)
				}
				waitServed(t, g, 200)
			}
			after := a.settled(t, ctx)
			waitServed(t, g, 500)
			r := g.Stop()
			t.Logf("%d × systemctl reload: %s", reloads, r)
			if r.Failed() != 0 {
				t.Errorf("%d requests failed across %d reloads: %s %v", r.Failed(), reloads, r, r.Samples)
			}
			// Keep-alive clients stay on a worker until it drains, so not
			// every generation gets a share; more than the 2 first must.
			if len(r.PIDs) <= 2 {
				t.Errorf("answers came from %d worker pids %v across %d reloads, want new generations among them", len(r.PIDs), slices.Sorted(maps.Keys(r.PIDs)), reloads)
			}
			for _, pid := range after {
				if slices.Contains(before, pid) {
					t.Errorf("worker pid %d served before and after %d reloads (before %v, after %v)", pid, reloads, before, after)
				}
			}
			status := a.status(t, ctx)
			t.Logf("StatusText: %q", status)
			if got := statusGeneration(t, status); got != gen+reloads {
				t.Errorf("after %d reloads from generation %d: StatusText = %q", reloads, gen, status)
			}
			if !strings.Contains(status, ", last reload ok ") {
				t.Errorf("StatusText = %q, want the last reload's outcome (ok)", status)
			}
			gen += reloads
		})
	}

	// SIGHUP straight to baton, no ExecReload=: baton's RELOADING=1 puts
	// the unit in "reloading" (systemd 252 honours it for Type=notify too)
	// and its READY=1 must bring it back to "active".
	if _, err := a.m.Systemctl(ctx, "kill", "--kill-who=main", "--signal=SIGHUP", "app.service"); err != nil {
		t.Fatal(err)
	}
	hup, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		status, err := a.m.Show(hup, "app.service", "StatusText")
		if m := reStatus.FindStringSubmatch(status); err == nil && m != nil && m[1] == strconv.Itoa(gen+1) && strings.Contains(status, ", last reload ok ") {
			break
		}
		select {
		case <-hup.Done():
			t.Fatalf("after SIGHUP: StatusText = %q (%v), want generation %d and last reload ok", status, err, gen+1)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := a.m.WaitActive(ctx, "app.service"); err != nil {
		t.Fatalf("after SIGHUP: %v", err)
	}

	if pid, err := a.m.MainPID(ctx, "app.service"); err != nil || pid != mainPID {
		t.Errorf("MainPID %d after the reloads (%v), was %d: a reload must not restart baton", pid, err, mainPID)
	}
	if n, _ := a.m.Show(ctx, "app.service", "NRestarts"); n != "0" {
		t.Errorf("NRestarts = %s, want 0", n)
	}
}

// A reload with a broken config, under load in both modes: `systemctl
// reload` fails (baton reload exits non-zero with the config error), the
// unit stays active, the same workers keep serving with no failed
// request, and baton's status line says the reload failed. Fixing the
// config and reloading again works.
func TestSystemdReloadBrokenConfig(t *testing.T) {
	ctx := withTimeout(t, 5*time.Minute)
	a := bootApp(t, ctx, true)
	mainPID, err := a.m.MainPID(ctx, "app.service")
	if err != nil {
		t.Fatal(err)
	}
	// A misspelt key: baton's strict TOML names it.
	broken := strings.Replace(a.config, "count ", "cuont ", 1)
	if broken == a.config {
		t.Fatalf("contrib's baton.toml has no count key:\n%s", a.config)
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			before := a.settled(t, ctx)
			g := startLoad(t, a.addr, mode, 64)
			if err := a.m.WriteFile(appConfig, []byte(broken)); err != nil {
				t.Fatal(err)
			}
			out, err := a.m.Systemctl(ctx, "reload", "app.service")
			if err == nil {
				t.Fatalf("systemctl reload with a broken config succeeded:\n%s", out)
			}
			t.Logf("systemctl reload with a broken config: %v", err)
			if err := a.m.WaitActive(ctx, "app.service"); err != nil {
				t.Fatalf("after the failed reload: %v", err)
			}
			waitServed(t, g, 1000)
			r := g.Stop()
			t.Logf("failed reload: %s", r)
			if r.Failed() != 0 {
				t.Errorf("%d requests failed across a failed reload: %s %v", r.Failed(), r, r.Samples)
			}
			if len(r.PIDs) == 0 {
				t.Errorf("no answer carried X-Pid: %s", r)
			}
			for p := range r.PIDs {
				if pid, _ := strconv.Atoi(p); !slices.Contains(before, pid) {
					t.Errorf("pid %s answered, but the workers before the failed reload were %v", p, before)
				}
			}
			if after := a.settled(t, ctx); !slices.Equal(after, before) {
				t.Errorf("workers %v after the failed reload, want the same as before: %v", after, before)
			}
			status := a.status(t, ctx)
			if !strings.Contains(status, ", last reload failed ") || !strings.Contains(status, "cuont") {
				t.Errorf("StatusText = %q, want the failed reload and its reason (cuont)", status)
			}
			t.Logf("StatusText: %q", status)
			// ExecReload= (`baton reload`) printed the reason; journald
			// stores it a moment after the job ended.
			a.waitJournal(t, ctx, regexp.MustCompile(`baton reload: .*cuont`))

			// Fixed: the next reload replaces the workers.
			if err := a.m.WriteFile(appConfig, []byte(a.config)); err != nil {
				t.Fatal(err)
			}
			if out, err := a.m.Systemctl(ctx, "reload", "app.service"); err != nil {
				t.Fatalf("reload with the config fixed: %v\n%s", err, out)
			}
			if err := a.m.WaitActive(ctx, "app.service"); err != nil {
				t.Fatal(err)
			}
			for _, pid := range a.settled(t, ctx) {
				if slices.Contains(before, pid) {
					t.Errorf("worker %d still serves after a good reload (before %v)", pid, before)
				}
			}
			if status := a.status(t, ctx); !strings.Contains(status, ", last reload ok ") {
				t.Errorf("StatusText = %q after the good reload, want last reload ok", status)
			}
		})
	}
	if pid, err := a.m.MainPID(ctx, "app.service"); err != nil || pid != mainPID {
		t.Errorf("MainPID %d after the reloads (%v), was %d: a reload must not restart baton", pid, err, mainPID)
	}
	if n, _ := a.m.Show(ctx, "app.service", "NRestarts"); n != "0" {
		t.Errorf("NRestarts = %s, want 0", n)
	}
}

// waitJournal waits a few seconds for app.service's journal to have a line
// matching re.
func (a *reloadApp) waitJournal(t *testing.T, ctx context.Context, re *regexp.Regexp) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		j := a.m.Journal(ctx, "app.service")
		if re.MatchString(j) {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("no line matching %q in the journal of app.service:\n%s", re, j)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
