package integration

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/loadtest"
)

// watchdogDropIn shortens contrib's WatchdogSec= for the test, so that a
// missing ping shows within seconds.
const (
	watchdogDropIn  = "/run/systemd/system/app.service.d/watchdog.conf"
	watchdogTimeout = 2 * time.Second
)

// contrib's app.service with WatchdogSec=2s (a drop-in) under a real
// systemd. (a) 10 × `systemctl reload` under keep-alive load, for at least
// 3 × WatchdogSec in all: baton's pings keep coming from its event loop
// through the reloads, so the unit stays active, is never restarted (same
// MainPID, NRestarts=0) and no request fails. (b) 3 self-upgrades (a new
// executable, then `systemctl reload`) under keep-alive load: each new
// baton pings in turn, so the unit stays active for 3 × WatchdogSec after
// the last and NRestarts stays 0, no request fails, and after each a Go
// worker of the new baton drains idle keep-alive clients within drainBound
// (the shared listener is still non-blocking everywhere). (c) A SIGSTOPped
// baton stops pinging: systemd kills it for the watchdog timeout and
// Restart=on-failure starts a new one, which serves.
func TestSystemdWatchdog(t *testing.T) {
	ctx := withTimeout(t, 4*time.Minute)
	// Only app.socket: the drop-in comes first. Shared, so that every
	// worker holds the one listener whose blocking mode (b) checks.
	a := bootAppWith(t, ctx, appOptions{worker: "balance = \"shared\"\n"})
	m := a.m
	if err := m.WriteFile(watchdogDropIn, []byte("[Service]\nWatchdogSec=2s\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Systemctl(ctx, "start", "app.service"); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitActive(ctx, "app.service"); err != nil {
		t.Fatal(err)
	}
	// Set when the service starts (infinity before).
	if got, err := m.Show(ctx, "app.service", "WatchdogUSec"); err != nil || got != "2s" {
		t.Fatalf("WatchdogUSec = %q (%v) with the drop-in, want 2s", got, err)
	}
	// baton got WATCHDOG_USEC and pings at half of it.
	a.waitJournal(t, ctx, regexp.MustCompile(`msg="pinging systemd's watchdog" every=1s`))
	mainPID, err := m.MainPID(ctx, "app.service")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("reloads", func(t *testing.T) {
		begin := time.Now()
		before := a.settled(t, ctx)
		g := startLoad(t, a.addr, loadtest.KeepAlive, 32)
		const reloads = 10
		for i := 0; i < reloads; i++ {
			if out, err := m.Systemctl(ctx, "reload", "app.service"); err != nil {
				t.Fatalf("reload %d: %v\n%s", i+1, err, out)
			}
			// systemctl reload may return while still "reloading".
			if err := m.WaitActive(ctx, "app.service"); err != nil {
				t.Fatalf("after reload %d: %v", i+1, err)
			}
			waitServed(t, g, 200)
		}
		reloaded := time.Since(begin)
		// However fast the reloads were, keep serving (and watching the
		// unit) until 3 × WatchdogSec have passed: a ping missing for
		// longer than WatchdogSec would have failed the unit by then.
		for time.Since(begin) < 3*watchdogTimeout {
			if st, err := m.Show(ctx, "app.service", "ActiveState"); err != nil || st != "active" {
				t.Fatalf("ActiveState = %q (%v) %v after the reloads, want active", st, err, time.Since(begin).Round(time.Millisecond))
			}
			time.Sleep(100 * time.Millisecond)
		}
		after := a.settled(t, ctx)
		waitServed(t, g, 500)
		r := g.Stop()
		elapsed := time.Since(begin)
		t.Logf("%d × systemctl reload with WatchdogSec=%v in %v (%v in all): %s", reloads, watchdogTimeout, reloaded.Round(time.Millisecond), elapsed.Round(time.Millisecond), r)
		if r.Failed() != 0 {
			t.Errorf("%d requests failed across %d reloads: %s %v", r.Failed(), reloads, r, r.Samples)
		}
		if elapsed < 3*watchdogTimeout {
			t.Errorf("ran %v, want at least 3 × WatchdogSec (%v)", elapsed, 3*watchdogTimeout)
		}
		for _, pid := range after {
			if slices.Contains(before, pid) {
				t.Errorf("worker pid %d served before and after %d reloads (before %v, after %v)", pid, reloads, before, after)
			}
		}
		if st, err := m.Show(ctx, "app.service", "ActiveState"); err != nil || st != "active" {
			t.Errorf("ActiveState = %q (%v) after the reloads, want active", st, err)
		}
		if pid, err := m.MainPID(ctx, "app.service"); err != nil || pid != mainPID {
			t.Errorf("MainPID %d after the reloads (%v), was %d: the watchdog or a reload restarted baton", pid, err, mainPID)
		}
		if n, err := m.Show(ctx, "app.service", "NRestarts"); err != nil || n != "0" {
			t.Errorf("NRestarts = %q (%v) after the reloads, want 0", n, err)
		}
		if j := fullJournal(t, ctx, a); strings.Contains(j, "Watchdog timeout") {
			t.Errorf("the watchdog fired during the reloads:\n%s", j)
		}
	})
	if t.Failed() {
		return
	}

	dir := a.bin
	t.Run("self-upgrades", func(t *testing.T) {
		first, second := versions(t)
		exes := []struct{ exe, version string }{{batonNext(t), second}, {bin.baton, first}, {batonNext(t), second}}
		ino := listenerInode(t, a.addr)
		rePing := regexp.MustCompile(`msg="pinging systemd's watchdog" every=1s`)
		pings := a.journalMatches(t, ctx, rePing)
		var failed int64
		var last time.Time
		for i, e := range exes {
			g := startLoad(t, a.addr, loadtest.KeepAlive, 32)
			workers, main := a.selfUpgrade(t, ctx, dir, e.exe, e.version)
			last = time.Now()
			waitServed(t, g, 300)
			r := g.Stop()
			failed += r.Failed()
			t.Logf("self-upgrade %d with WatchdogSec=%v: %s", i+1, watchdogTimeout, r)
			if r.Failed() != 0 {
				t.Errorf("%d requests failed across self-upgrade %d: %s %v", r.Failed(), i+1, r, r.Samples)
			}
			// The new baton pings in its turn.
			a.waitJournalMore(t, ctx, rePing, pings+i)

			// Without load (a new connection would wake an accept stuck
			// in the kernel), a Go worker of the new baton told to drain
			// while keep-alive clients sit idle on it exits 0 within
			// drainBound, and the shared listener is non-blocking in
			// every process holding it (docs/architecture.md, "baton → worker").
			checkNonBlocking(t, a.procRoot(), ino, append([]int{main}, workers...)...)
			conns := idleConns(t, a.addr, 8)
			victim, most := 0, 0
			for p, cs := range conns {
				if w, _ := strconv.Atoi(p); w > 0 && slices.Contains(workers, w) && len(cs) > most {
					victim, most = w, len(cs)
				}
			}
			if victim <= 0 {
				t.Fatalf("no worker of the new baton (%v) answered: %v", workers, conns)
			}
			if _, err := m.Run(ctx, "kill", "-TERM", strconv.Itoa(victim)); err != nil {
				t.Fatal(err)
			}
			took := a.waitExited(t, victim, 30*time.Second)
			reExit := regexp.MustCompile(`msg="worker exited" slot=\d+ pid=` + strconv.Itoa(victim) + ` generation=\d+ how=(?:"([^"]*)"|(\S+))`)
			line := waitFullJournal(t, ctx, a, reExit)[0]
			mm := reExit.FindStringSubmatch(line)
			how := mm[1] + mm[2]
			t.Logf("self-upgrade %d: worker %d with %d idle keep-alive clients drained in %v: %s", i+1, victim, most, took.Round(time.Millisecond), how)
			if how != "exit status 0" {
				t.Errorf("worker %d ended with %q after SIGTERM, want exit status 0 (drained, not killed)", victim, how)
			}
			if took > drainBound {
				t.Errorf("worker %d took %v to drain %d idle connections, want under %v: its accept did not wake up", victim, took.Round(time.Millisecond), most, drainBound)
			}
			drainedConns(t, conns[strconv.Itoa(victim)])
			for _, cs := range conns {
				for _, c := range cs {
					c.Close()
				}
			}
			main2, err := m.MainPID(ctx, "app.service")
			if err != nil {
				t.Fatal(err)
			}
			checkNonBlocking(t, a.procRoot(), ino, append([]int{main2}, a.settled(t, ctx)...)...)
			if st, err := m.Show(ctx, "app.service", "ActiveState"); err != nil || st != "active" {
				t.Fatalf("ActiveState = %q (%v) after self-upgrade %d, want active", st, err, i+1)
			}
		}
		// The last baton must keep pinging: watch for 3 × WatchdogSec.
		for time.Since(last) < 3*watchdogTimeout {
			if st, err := m.Show(ctx, "app.service", "ActiveState"); err != nil || st != "active" {
				t.Fatalf("ActiveState = %q (%v) %v after the last self-upgrade, want active", st, err, time.Since(last).Round(time.Millisecond))
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("%d self-upgrades under load with WatchdogSec=%v, watched %v after the last: %d failed requests", len(exes), watchdogTimeout, time.Since(last).Round(time.Millisecond), failed)
		if n, err := m.Show(ctx, "app.service", "NRestarts"); err != nil || n != "0" {
			t.Errorf("NRestarts = %q (%v) after the self-upgrades, want 0", n, err)
		}
		if j := fullJournal(t, ctx, a); strings.Contains(j, "Watchdog timeout") {
			t.Errorf("the watchdog fired during the self-upgrades:\n%s", j)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("SIGSTOP", func(t *testing.T) {
		pid, err := m.MainPID(ctx, "app.service")
		if err != nil {
			t.Fatal(err)
		}
		// `kill -STOP 0` inside would stop the caller's process group on
		// the host: MainPID refuses 0, and so does this.
		if pid <= 0 {
			t.Fatalf("MainPID = %d", pid)
		}
		restarts, err := m.Show(ctx, "app.service", "NRestarts")
		if err != nil {
			t.Fatal(err)
		}
		nBefore, err := strconv.Atoi(restarts)
		if err != nil {
			t.Fatalf("NRestarts = %q: %v", restarts, err)
		}
		stopped := time.Now()
		if _, err := m.Run(ctx, "kill", "-STOP", strconv.Itoa(pid)); err != nil {
			t.Fatal(err)
		}
		// systemd notices within WatchdogSec, sends SIGABRT (and SIGCONT),
		// SIGTERMs the workers left (KillMode=mixed) and restarts.
		wait, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		var state, mainPIDs, nr string
		for {
			state, _ = m.Show(wait, "app.service", "ActiveState")
			mainPIDs, _ = m.Show(wait, "app.service", "MainPID")
			nr, _ = m.Show(wait, "app.service", "NRestarts")
			n, _ := strconv.Atoi(nr)
			p, _ := strconv.Atoi(mainPIDs)
			if state == "active" && n == nBefore+1 && p > 0 && p != pid {
				break
			}
			select {
			case <-wait.Done():
				t.Fatalf("%v after SIGSTOP of baton (pid %d): ActiveState=%q MainPID=%s NRestarts=%s, want active, a new MainPID and NRestarts=%d",
					time.Since(stopped).Round(time.Millisecond), pid, state, mainPIDs, nr, nBefore+1)
			case <-time.After(50 * time.Millisecond):
			}
		}
		took := time.Since(stopped)
		t.Logf("SIGSTOP of baton (pid %d): restarted by systemd as pid %s in %v (NRestarts %d -> %s)", pid, mainPIDs, took.Round(time.Millisecond), nBefore, nr)
		if took < watchdogTimeout/2 {
			t.Errorf("restarted %v after SIGSTOP: too soon for the watchdog (WatchdogSec=%v, pings every %v)", took, watchdogTimeout, watchdogTimeout/2)
		}
		body, err := getOnce(a.addr, "/")
		if err != nil || !strings.HasPrefix(body, "hello from pid") {
			t.Fatalf("request after the restart: %q, %v", body, err)
		}
		// The restart was the watchdog's doing.
		for _, line := range waitFullJournal(t, ctx, a,
			regexp.MustCompile(`app\.service: Watchdog timeout.*`),
			regexp.MustCompile(`app\.service: Failed with result 'watchdog'.*`)) {
			t.Logf("journal: %s", line)
		}
		// The new baton serves its own workers; none of the stopped one's
		// is left.
		workers := a.settled(t, ctx)
		ps, err := m.Run(ctx, "ps", "-e", "-o", "pid=,ppid=,args=")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(ps, "\n") {
			f := strings.Fields(line)
			if len(f) < 3 || f[2] != optDir+"/hello" {
				continue
			}
			if w, _ := strconv.Atoi(f[0]); !slices.Contains(workers, w) {
				t.Errorf("worker left from the stopped baton: %s (the new baton's are %v)", line, workers)
			}
		}
		if st, err := m.Show(ctx, "app.service", "ActiveState"); err != nil || st != "active" {
			t.Errorf("ActiveState = %q (%v) after the restart, want active", st, err)
		}
	})
}

// fullJournal returns all of app.service's journal (Machine.Journal keeps
// the last 300 lines, and the Go runtime's dump of a baton killed with
// SIGABRT alone is longer than that).
func fullJournal(t *testing.T, ctx context.Context, a *reloadApp) string {
	t.Helper()
	out, err := a.m.Run(ctx, "journalctl", "--no-pager", "-o", "short-monotonic", "-u", "app.service")
	if err != nil {
		t.Fatalf("journalctl -u app.service: %v", err)
	}
	return out
}

// waitFullJournal waits a few seconds (journald stores a line a moment
// after it is logged) until app.service's journal has a line matching each
// of res, and returns the first match of each.
func waitFullJournal(t *testing.T, ctx context.Context, a *reloadApp, res ...*regexp.Regexp) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		j := fullJournal(t, ctx, a)
		var found []string
		for _, re := range res {
			if m := re.FindString(j); m != "" {
				found = append(found, m)
			}
		}
		if len(found) == len(res) {
			return found
		}
		select {
		case <-ctx.Done():
			t.Fatalf("app.service's journal has no line matching each of %q:\n%s", res, j)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
