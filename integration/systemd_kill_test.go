package integration

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Bounds for TestSystemdKill9, far above what it takes (well under a
// second) and below contrib's TimeoutStopSec=45, the time systemd would give
// processes left in the unit before it kills them (it SIGKILLs them at once
// once the main process is gone under KillMode=mixed, but not under
// KillMode=process).
const (
	killGoneWithin   = 10 * time.Second // the killed tree is gone
	killActiveWithin = 25 * time.Second // the unit is active again, new MainPID
)

// `kill -9` of baton (the unit's MainPID) under load, socket-activated, in
// both load modes: baton's workers die with it (their parent-death signal,
// and systemd's SIGKILL of what is left in the cgroup under KillMode=mixed),
// Restart=on-failure starts a new baton at once, and no connection is
// refused (app.socket keeps the listening socket, so connections wait in
// its queue); only requests in flight on the killed workers may fail. The
// new baton serves, and the unit's cgroup then holds it and its own
// workers only.
func TestSystemdKill9(t *testing.T) {
	ctx := withTimeout(t, 4*time.Minute)
	a := bootApp(t, ctx, true)
	m := a.m
	for i, mode := range modes {
		kills := i + 1
		t.Run(mode.String(), func(t *testing.T) {
			oldWorkers := a.settled(t, ctx)
			oldMain, err := m.MainPID(ctx, "app.service")
			if err != nil {
				t.Fatal(err)
			}
			// The check below must see workers at all to mean anything.
			a.checkCgroup(t, ctx, oldMain, oldWorkers)
			restarts := a.nRestarts(t, ctx)

			const c = 32
			g := startLoad(t, a.addr, mode, c)
			// MainPID refuses 0: `kill -9 0` inside would kill the caller's
			// process group on the host.
			if oldMain <= 0 {
				t.Fatalf("MainPID = %d", oldMain)
			}
			killed := time.Now()
			if _, err := m.Run(ctx, "kill", "-9", strconv.Itoa(oldMain)); err != nil {
				t.Fatal(err)
			}
			a.waitGone(t, ctx, append([]int{oldMain}, oldWorkers...), killGoneWithin)
			goneAfter := time.Since(killed)
			newMain := a.waitRestarted(t, ctx, oldMain, restarts+1, killActiveWithin)
			activeAfter := time.Since(killed)

			waitServed(t, g, 500)
			newWorkers := a.settled(t, ctx)
			if pid, err := m.MainPID(ctx, "app.service"); err != nil || pid != newMain {
				t.Fatalf("MainPID %d (%v) once settled, want %d", pid, err, newMain)
			}
			waitServed(t, g, 500)
			r := g.Stop()
			t.Logf("kill -9 of baton (pid %d, workers %v) under %s load: its workers gone after %v, active again as pid %d (workers %v) after %v; %s",
				oldMain, oldWorkers, mode, goneAfter.Round(time.Millisecond), newMain, newWorkers, activeAfter.Round(time.Millisecond), r)

			if r.Refused != 0 {
				t.Errorf("%d connections refused across the kill and restart: %s %v", r.Refused, r, r.Samples)
			}
			// Each client may lose the request it had in flight, and one
			// more if it reconnected to a worker that had not yet died; a
			// timeout means the restart took longer than the client's.
			if n := r.Failed() - r.Timeout; n > 2*c {
				t.Errorf("%d requests failed (besides %d timeouts) with %d clients: more than the ones in flight on the killed workers: %s %v", n, r.Timeout, c, r, r.Samples)
			}
			served := false
			for p := range r.PIDs {
				if pid, _ := strconv.Atoi(p); slices.Contains(newWorkers, pid) {
					served = true
				}
			}
			if !served {
				t.Errorf("no answer came from the new workers %v; answers came from %v", newWorkers, slices.Sorted(maps.Keys(r.PIDs)))
			}
			for _, pid := range newWorkers {
				if slices.Contains(oldWorkers, pid) {
					t.Errorf("worker %d served before and after the kill (before %v, after %v)", pid, oldWorkers, newWorkers)
				}
			}
			a.checkCgroup(t, ctx, newMain, newWorkers)

			// The restart was systemd's, for the kill.
			a.waitJournalCount(t, ctx, "app.service: Main process exited, code=killed, status=9/KILL", kills)
		})
		if t.Failed() {
			return
		}
	}
}

// waitJournalCount waits a few seconds (journald stores a line a moment
// after it is logged) until app.service's journal has n lines containing
// line, and fails if it has more.
func (a *reloadApp) waitJournalCount(t *testing.T, ctx context.Context, line string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		j := fullJournal(t, ctx, a)
		got := strings.Count(j, line)
		if got > n {
			t.Errorf("app.service's journal has %d lines with %q, want %d:\n%s", got, line, n, j)
		}
		if got >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("app.service's journal has %d lines with %q, want %d:\n%s", got, line, n, j)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// nRestarts returns app.service's NRestarts.
func (a *reloadApp) nRestarts(t *testing.T, ctx context.Context) int {
	t.Helper()
	s, err := a.m.Show(ctx, "app.service", "NRestarts")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("NRestarts = %q: %v", s, err)
	}
	return n
}

// waitGone waits up to d until none of pids is a process in the container
// (a zombie not yet reaped still counts).
func (a *reloadApp) waitGone(t *testing.T, ctx context.Context, pids []int, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	list := make([]string, len(pids))
	for i, p := range pids {
		list[i] = strconv.Itoa(p)
	}
	for {
		// ps exits 1 when it lists nothing.
		out, err := a.m.Run(ctx, "ps", "-o", "pid=,stat=,args=", "-p", strings.Join(list, ","))
		if strings.TrimSpace(out) == "" && ctx.Err() == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("still there %v after SIGKILL of baton (%v):\n%s", d, err, out)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitRestarted waits up to d until app.service is active with a main
// process other than old and NRestarts is restarts, and returns the new
// MainPID.
func (a *reloadApp) waitRestarted(t *testing.T, ctx context.Context, old, restarts int, d time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var out string
	var err error
	for {
		out, err = a.m.Systemctl(ctx, "show", "-p", "ActiveState,SubState,MainPID,NRestarts", "app.service")
		p := map[string]string{}
		for _, line := range strings.Split(out, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				p[k] = v
			}
		}
		pid, _ := strconv.Atoi(p["MainPID"])
		n, _ := strconv.Atoi(p["NRestarts"])
		if err == nil && p["ActiveState"] == "active" && pid > 0 && pid != old && n == restarts {
			return pid
		}
		if p["ActiveState"] == "failed" {
			t.Fatalf("app.service failed after SIGKILL of baton (pid %d):\n%s", old, out)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("app.service not active again with a new MainPID and NRestarts=%d within %v of SIGKILL of baton (pid %d) (%v):\n%s", restarts, d, old, err, out)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// checkCgroup checks that app.service's cgroup holds exactly baton (main)
// and its workers, each a child of main, in every hierarchy that has it
// (cgroup2 alone at /sys/fs/cgroup, or, on a hybrid host, "unified" and the
// name=systemd one below it).
func (a *reloadApp) checkCgroup(t *testing.T, ctx context.Context, main int, workers []int) {
	t.Helper()
	cg, err := a.m.Show(ctx, "app.service", "ControlGroup")
	if err != nil || !strings.HasPrefix(cg, "/") {
		t.Fatalf("ControlGroup of app.service = %q (%v)", cg, err)
	}
	args := []string{"sh", "-c", `for f; do [ ! -e "$f" ] || { echo "== $f"; cat "$f"; } || exit; done`, "sh"}
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"} {
		args = append(args, root+cg+"/cgroup.procs")
	}
	out, err := a.m.Run(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	procs := map[string][]string{} // cgroup.procs file -> its pids
	var path string
	for _, f := range strings.Fields(out) {
		switch _, err := strconv.Atoi(f); {
		case f == "==":
		case strings.HasPrefix(f, "/"):
			path = f
			procs[path] = []string{}
		case err == nil && path != "":
			procs[path] = append(procs[path], f)
		default:
			t.Fatalf("cgroup.procs of %s: %q", cg, out)
		}
	}
	if len(procs) == 0 {
		t.Fatalf("no cgroup.procs for %s under /sys/fs/cgroup", cg)
	}

	mainPID := strconv.Itoa(main)
	want := []string{mainPID}
	for _, w := range workers {
		want = append(want, strconv.Itoa(w))
	}
	slices.Sort(want)
	var all []string // every pid in any hierarchy
	for path, pids := range procs {
		slices.Sort(pids)
		if !slices.Equal(pids, want) {
			t.Errorf("%s holds %v, want baton (pid %d) and its workers %v only", path, pids, main, workers)
		}
		for _, p := range pids {
			if !slices.Contains(all, p) {
				all = append(all, p)
			}
		}
	}
	// Each is baton or its child: a worker left over from a killed baton
	// would have been re-parented.
	ps, err := a.m.Run(ctx, "ps", "-o", "pid=,ppid=,args=", "-p", strings.Join(all, ","))
	if err != nil {
		t.Fatalf("ps of app.service's cgroup %v: %v", all, err)
	}
	listed := 0
	for _, line := range strings.Split(strings.TrimSpace(ps), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			t.Fatalf("ps: %q", ps)
		}
		listed++
		if f[0] != mainPID && f[1] != mainPID {
			t.Errorf("app.service's cgroup holds a process that is neither baton (pid %d) nor its child: %s", main, line)
		}
	}
	if listed != len(all) {
		t.Errorf("ps lists %d of the %d processes %v in app.service's cgroup:\n%s", listed, len(all), all, ps)
	}
}
