package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// procRoot is the container's /proc, seen from the host.
func (a *reloadApp) procRoot() string {
	return fmt.Sprintf("/proc/%d/root/proc", a.m.Leader)
}

// waitExited waits up to d until process pid of the container is gone
// (exited and reaped), and returns how long that took.
func (a *reloadApp) waitExited(t *testing.T, pid int, d time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	path := filepath.Join(a.procRoot(), strconv.Itoa(pid))
	for {
		if _, err := os.Stat(path); err != nil {
			return time.Since(begin)
		}
		if time.Since(begin) > d {
			t.Fatalf("process %d of the container is still there after %v", pid, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// journalMatches returns how many lines of app.service's journal match re.
func (a *reloadApp) journalMatches(t *testing.T, ctx context.Context, re *regexp.Regexp) int {
	t.Helper()
	return len(re.FindAllStringIndex(fullJournal(t, ctx, a), -1))
}

// waitJournalMore waits up to 10s until more than n lines of
// app.service's journal match re.
func (a *reloadApp) waitJournalMore(t *testing.T, ctx context.Context, re *regexp.Regexp, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for a.journalMatches(t, ctx, re) <= n {
		if time.Now().After(deadline) {
			t.Fatalf("no new line matching %q in app.service's journal (%d before)", re, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// selfUpgrade puts exe in place of baton's executable, runs `systemctl
// reload app.service` and checks the self-upgrade it makes: the reload
// succeeds, the unit is active, MainPID is the new baton's, which runs
// version and serves the next generation with new workers, and the old
// baton and its workers are gone. It returns the new workers and MainPID.
func (a *reloadApp) selfUpgrade(t *testing.T, ctx context.Context, dir, exe, version string) ([]int, int) {
	t.Helper()
	before := a.settled(t, ctx)
	st0, err := a.stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldMain, err := a.m.MainPID(ctx, "app.service")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	installExe(t, filepath.Join(dir, "baton"), b)
	begin := time.Now()
	if out, err := a.m.Systemctl(ctx, "reload", "app.service"); err != nil {
		t.Fatalf("systemctl reload with a new baton in place: %v\n%s", err, out)
	}
	if err := a.m.WaitActive(ctx, "app.service"); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	newMain, err := a.m.MainPID(ctx, "app.service")
	if err != nil {
		t.Fatal(err)
	}
	if newMain == oldMain {
		t.Fatalf("MainPID %d unchanged by the self-upgrade", newMain)
	}
	a.waitExited(t, oldMain, 40*time.Second)
	gone := time.Since(begin)
	for _, w := range before {
		if _, err := os.Stat(filepath.Join(a.procRoot(), strconv.Itoa(w))); err == nil {
			t.Errorf("worker %d of the old baton %d is still there after it exited", w, oldMain)
		}
	}
	after := a.settled(t, ctx)
	st, err := a.stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != newMain || st.Version != version || st.Generation != st0.Generation+1 {
		t.Errorf("after the self-upgrade: baton pid %d, version %q, generation %d; want MainPID %d, %q, %d", st.PID, st.Version, st.Generation, newMain, version, st0.Generation+1)
	}
	for _, w := range after {
		if slices.Contains(before, w) {
			t.Errorf("worker %d serves before and after the self-upgrade", w)
		}
	}
	// ExecReload= (`baton reload`) said so.
	a.waitJournal(t, ctx, regexp.MustCompile(`reload ok: upgraded to baton pid `+strconv.Itoa(newMain)+`, generation `+strconv.Itoa(st0.Generation+1)+` `))
	t.Logf("systemctl reload: MainPID %d -> %d (version %s, generation %d) in %v; old baton gone after %v",
		oldMain, newMain, st.Version, st.Generation, took.Round(time.Millisecond), gone.Round(time.Millisecond))
	return after, newMain
}

// A new baton executable put in place, then `systemctl reload app` under
// 64 clients, in both modes: the reload succeeds, MainPID changes to the
// new baton, which runs the new version, the unit stays active and is
// never restarted, and not one request fails.
func TestSystemdUpgradeUnderLoad(t *testing.T) {
	first, second := versions(t)
	ctx := withTimeout(t, 4*time.Minute)
	a := bootApp(t, ctx, true)
	dir := a.bin
	exes := []struct{ exe, version string }{{batonNext(t), second}, {bin.baton, first}}
	gen := statusGeneration(t, a.status(t, ctx))
	for i, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			g := startLoad(t, a.addr, mode, 64)
			workers, _ := a.selfUpgrade(t, ctx, dir, exes[i].exe, exes[i].version)
			was := g.Snapshot().PIDs
			waitServed(t, g, 500)
			r := g.Stop()
			t.Logf("self-upgrade under load: %s", r)
			if r.Failed() != 0 {
				t.Errorf("%d requests failed across the self-upgrade: %s %v", r.Failed(), r, r.Samples)
			}
			served := int64(0)
			for p, n := range r.PIDs {
				if w, _ := strconv.Atoi(p); slices.Contains(workers, w) {
					served += n - was[p]
				}
			}
			if served < 500-64 {
				t.Errorf("only %d of the last 500 answers came from the new workers %v", served, workers)
			}
			gen++
			status := a.status(t, ctx)
			t.Logf("StatusText: %q", status)
			if statusGeneration(t, status) != gen || !strings.Contains(status, ", last reload ok ") {
				t.Errorf("StatusText = %q, want generation %d and the last reload ok", status, gen)
			}
			if n, err := a.m.Show(ctx, "app.service", "NRestarts"); err != nil || n != "0" {
				t.Errorf("NRestarts = %q (%v), want 0", n, err)
			}
		})
	}
	a.waitJournal(t, ctx, regexp.MustCompile(`msg="took over from the previous baton"`))
}

// A broken baton executable put in place, under 64 clients in both modes:
// (a) one that fails as `baton run` (its client still works), then
// `systemctl reload`: baton tries it, the reload job fails, and STATUS=
// says why; (b) garbage, then SIGHUP to baton: baton tries it, and STATUS=
// says why; (c) garbage, then `systemctl reload`: ExecReload= (the new
// `baton reload`) cannot even run and the job fails. Each time MainPID
// and the workers stay, the unit is active, and no request fails. The good
// executable put back then upgrades.
func TestSystemdUpgradeBrokenBinary(t *testing.T) {
	_, second := versions(t)
	ctx := withTimeout(t, 4*time.Minute)
	a := bootApp(t, ctx, true)
	dir := a.bin
	good, err := os.ReadFile(bin.baton)
	if err != nil {
		t.Fatal(err)
	}
	installExe(t, filepath.Join(dir, "baton-good"), good)
	mainPID, err := a.m.MainPID(ctx, "app.service")
	if err != nil {
		t.Fatal(err)
	}
	failsAtStart := "#!/bin/sh\n" +
		"if [ \"$1\" = run ]; then echo 'baton: this build is broken' >&2; exit 1; fi\n" +
		"exec " + optDir + "/baton-good \"$@\"\n"
	garbage := strings.Repeat("\xde\xad\xbe\xef not a program\n", 256)
	cases := []struct {
		name, data, trigger string
		why                 string // in baton's status line; "" if baton is never asked
	}{
		{"fails at start, systemctl reload", failsAtStart, "reload", "exit status 1"},
		{"garbage, SIGHUP", garbage, "SIGHUP", "exec format error"},
		{"garbage, systemctl reload", garbage, "reload", ""},
	}
	reFailedJ := regexp.MustCompile(`msg="reload failed; the serving generation stays" err=.*upgrad`)
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			before := a.settled(t, ctx)
			g := startLoad(t, a.addr, mode, 64)
			for _, c := range cases {
				failures := a.journalMatches(t, ctx, reFailedJ)
				installExe(t, filepath.Join(dir, "baton"), []byte(c.data))
				begin := time.Now()
				switch c.trigger {
				case "reload":
					if out, err := a.m.Systemctl(ctx, "reload", "app.service"); err == nil {
						t.Errorf("%s: systemctl reload succeeded:\n%s", c.name, out)
					} else {
						t.Logf("%s: systemctl reload: %v", c.name, err)
					}
				case "SIGHUP":
					if _, err := a.m.Systemctl(ctx, "kill", "--kill-who=main", "--signal=SIGHUP", "app.service"); err != nil {
						t.Fatal(err)
					}
				}
				if c.why != "" {
					a.waitJournalMore(t, ctx, reFailedJ, failures)
				}
				if err := a.m.WaitActive(ctx, "app.service"); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				took := time.Since(begin)
				if pid, err := a.m.MainPID(ctx, "app.service"); err != nil || pid != mainPID {
					t.Errorf("%s: MainPID %d (%v), want %d still", c.name, pid, err, mainPID)
				}
				if after := a.settled(t, ctx); !slices.Equal(after, before) {
					t.Errorf("%s: workers %v after the failed upgrade, want the same as before: %v", c.name, after, before)
				}
				status := a.status(t, ctx)
				t.Logf("%s: failed after %v; StatusText: %q", c.name, took.Round(time.Millisecond), status)
				if c.why != "" && (!strings.Contains(status, ", last reload failed ") || !strings.Contains(status, c.why)) {
					t.Errorf("%s: StatusText = %q, want the failed reload and %q", c.name, status, c.why)
				}
				if n, err := a.m.Show(ctx, "app.service", "NRestarts"); err != nil || n != "0" {
					t.Errorf("%s: NRestarts = %q (%v), want 0", c.name, n, err)
				}
				waitServed(t, g, 300)
			}
			r := g.Stop()
			t.Logf("%d failed upgrades: %s", len(cases), r)
			if r.Failed() != 0 {
				t.Errorf("%d requests failed across failed upgrades: %s %v", r.Failed(), r, r.Samples)
			}
			for p := range r.PIDs {
				if w, _ := strconv.Atoi(p); !slices.Contains(before, w) {
					t.Errorf("pid %s answered; want only the workers %v", p, before)
				}
			}
		})
	}
	// `baton reload` printed the reason for ExecReload=.
	a.waitJournal(t, ctx, regexp.MustCompile(`baton reload: .*exit status 1`))
	a.selfUpgrade(t, ctx, dir, batonNext(t), second)
	if status := a.status(t, ctx); !strings.Contains(status, ", last reload ok ") {
		t.Errorf("StatusText = %q after the good upgrade, want last reload ok", status)
	}
}
