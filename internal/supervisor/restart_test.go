package supervisor

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
)

func budget(limit int, onGiveUp string) func(*config.Config) {
	return func(c *config.Config) {
		c.Restart = config.Restart{
			Limit:      limit,
			Window:     config.Duration(time.Minute),
			BackoffMin: config.Duration(20 * time.Millisecond),
			BackoffMax: config.Duration(160 * time.Millisecond),
			OnGiveUp:   onGiveUp,
		}
	}
}

var (
	reStarted  = regexp.MustCompile(`time=(\S+) level=INFO msg="worker started" slot=0 `)
	reReplaced = regexp.MustCompile(`time=(\S+) level=WARN msg="worker exited unexpectedly, replacing it" slot=0 .* after=(\S+)`)
)

// A worker that exits at start, limit 10: exactly 10 restarts, each after
// a backoff that doubles up to backoff_max, then baton gives up and exits.
func TestCrashLoopGivesUp(t *testing.T) {
	h := startHarness(t, testConfig("exit1", 1, func(c *config.Config) {
		budget(10, "exit")(c)
		// The budget, not the start's deadline, must end the run, however
		// long each worker takes to start and exit.
		c.Reload.Timeout = config.Duration(5 * time.Minute)
	}))
	err := h.waitFor(5 * time.Minute)
	if !errors.Is(err, ErrGiveUp) || !strings.Contains(err.Error(), "10 restarts within 1m0s") {
		t.Fatalf("Run = %v, want ErrGiveUp after 10 restarts", err)
	}
	times := func(re *regexp.Regexp) (at []time.Time, m [][]string) {
		m = re.FindAllStringSubmatch(h.out.String(), -1)
		for _, m := range m {
			ts, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				t.Fatal(err)
			}
			at = append(at, ts)
		}
		return at, m
	}
	starts, _ := times(reStarted)
	exits, replaced := times(reReplaced)
	if len(starts) != 11 || len(exits) != 10 {
		t.Fatalf("worker started %d times and was replaced %d times, want 1 + 10 restarts", len(starts), len(exits))
	}
	// From each exit to the next start: the backoff (20, 40, 80, 160,
	// 160 ... ms) plus the time to fork.
	want := []time.Duration{20, 40, 80, 160, 160, 160, 160, 160, 160, 160}
	for i, w := range want {
		backoff := w * time.Millisecond
		if replaced[i][2] != backoff.String() {
			t.Errorf("restart %d after a backoff of %s, want %s", i+1, replaced[i][2], backoff)
		}
		if gap := starts[i+1].Sub(exits[i]); gap < backoff || gap > backoff+time.Second {
			t.Errorf("restart %d came %s after the exit, want the %s backoff", i+1, gap, backoff)
		}
	}
}

// With on_giveup = "degrade" the survivors keep serving once a crashing
// slot has spent the budget, and systemd is told the service is ready.
func TestCrashLoopDegrades(t *testing.T) {
	h := startHarness(t, testConfig("exit1-slot1", 2, budget(3, "degrade")))
	if n := h.waitNote("READY=1"); !strings.Contains(n, "1/2 workers ready") || !strings.Contains(n, "gave up restarting") {
		t.Errorf("READY message %q, want the survivor and the giveup in the status", n)
	}
	got := h.serving(1)
	for _, a := range got {
		if a.gen != 1 {
			t.Errorf("answer from %+v", a)
		}
	}
	if st := h.stats(); st.Restarts != 3 || st.Workers != 1 {
		t.Errorf("stats %+v, want 3 restarts and the 1 survivor", st)
	}
}

// A worker that stops sending WATCHDOG=1 is replaced, new first, within
// the watchdog interval, then killed.
func TestWatchdogReplacesSilentWorker(t *testing.T) {
	h := startHarness(t, testConfig("watchdog", 1, func(c *config.Config) {
		c.Worker.Watchdog = config.Duration(500 * time.Millisecond)
	}))
	h.waitNote("READY=1")
	first := h.readyPIDs(1)
	if len(first) != 1 {
		t.Fatalf("ready pids %v", first)
	}
	re := regexp.MustCompile(`time=(\S+) level=WARN msg="replacing worker" slot=0 pid=` + strconv.Itoa(first[0]) + ` .*why="sent no WATCHDOG=1 for 500ms"`)
	reKilled := regexp.MustCompile(`pid=` + strconv.Itoa(first[0]) + ` generation=1 how="killed by SIGKILL"`)
	deadline := time.Now().Add(10 * time.Second)
	for !re.MatchString(h.out.String()) || !reKilled.MatchString(h.out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("worker %d was not replaced and killed after missing its watchdog", first[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
	out := h.out.String()
	replacedAt, _ := time.Parse(time.RFC3339Nano, re.FindStringSubmatch(out)[1])
	// Its last ping came 200ms after it was ready: replaced 500ms later.
	ready := regexp.MustCompile(`time=(\S+) level=INFO msg="worker ready" slot=0 pid=` + strconv.Itoa(first[0]) + ` `).FindStringSubmatch(out)
	readyAt, _ := time.Parse(time.RFC3339Nano, ready[1])
	if d := replacedAt.Sub(readyAt); d < 600*time.Millisecond || d > 2*time.Second {
		t.Errorf("replaced %s after it became ready; want its last ping (~200ms) + the 500ms watchdog, with a small margin", d)
	}
	// New first: its replacement started before it was killed.
	iNew := regexp.MustCompile(`msg="worker started" slot=0 pid=\d+ generation=1`).FindAllStringIndex(out, -1)
	iKill := reKilled.FindStringIndex(out)
	if len(iNew) < 2 || iNew[1][0] > iKill[0] {
		t.Errorf("the replacement did not start before the silent worker was killed")
	}
}

// A worker above worker.max_memory is replaced, new first, then drained
// (SIGTERM: it exits 0, not killed).
func TestMaxMemoryReplacesGracefully(t *testing.T) {
	h := startHarness(t, testConfig("serve", 1, func(c *config.Config) {
		c.Worker.MaxMemory = 48 << 20
	}))
	h.waitNote("READY=1")
	first := h.readyPIDs(1)[0]
	c, err := tryGetPath(h.addr, "/grow")
	if err != nil || !strings.HasPrefix(c, "grown") {
		t.Fatalf("GET /grow = %q, %v", c, err)
	}
	reExit := regexp.MustCompile(`msg="worker exited" slot=0 pid=` + strconv.Itoa(first) + ` generation=1 how="exit status 0"`)
	deadline := time.Now().Add(15 * time.Second)
	for !reExit.MatchString(h.out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("worker %d above max_memory was not drained", first)
		}
		time.Sleep(10 * time.Millisecond)
	}
	out := h.out.String()
	if !strings.Contains(out, "above max_memory 48 MiB") {
		t.Errorf("no log line naming max_memory")
	}
	iReady := regexp.MustCompile(`msg="worker ready" slot=0 pid=\d+ generation=1`).FindAllStringIndex(out, -1)
	if len(iReady) < 2 || iReady[1][0] > reExit.FindStringIndex(out)[0] {
		t.Errorf("the replacement was not ready before the big worker left")
	}
}
