package supervisor

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/batonhq/baton/internal/lifecycle"
)

// A probe that comes while /livez's no-op waits in the loop's queue waits
// for that one; once it has run, the next probe queues a new one, so
// every answer comes from a no-op run after the probe asked.
func TestSharedPing(t *testing.T) {
	var sp sharedPing
	first, queue := sp.join()
	if !queue {
		t.Fatal("the first probe found a no-op pending")
	}
	if p, queue := sp.join(); p != first || queue {
		t.Error("a probe while the no-op is queued did not wait for it")
	}
	sp.ran(first)
	next, queue := sp.join()
	if next == first || !queue {
		t.Error("a probe after the no-op ran waits for it: its answer would predate the probe")
	}
	sp.ran(first) // late: a timed-out no-op that runs after all
	if p, _ := sp.join(); p != next {
		t.Error("an old no-op that ran unhooked the pending one")
	}
}

// 100 probes at once while the loop is held cost it fewer no-ops than
// probes, and all say the loop answers; with the loop gone they say it
// does not.
func TestLoopAnswers(t *testing.T) {
	s := &supervisor{events: make(chan any, 64), quit: make(chan struct{}), metrics: &metricsServer{}}
	var wg sync.WaitGroup
	answers := make(chan bool, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers <- s.loopAnswers()
		}()
	}
	ran := 0
	for done := false; !done; {
		select {
		case ev := <-s.events:
			ev.(loopCall).do()
			ran++
		case <-waitCh(&wg):
			done = true
		}
	}
	close(answers)
	for ok := range answers {
		if !ok {
			t.Fatal("a probe said the loop does not answer while it ran every no-op")
		}
	}
	if ran >= 100 {
		t.Errorf("100 probes queued %d no-ops: they do not share them", ran)
	}
	t.Logf("100 probes, %d no-ops", ran)
	close(s.quit)
	if s.loopAnswers() {
		t.Error("a probe said the loop answers once it has ended")
	}
}

// waitCh is closed once wg is done.
func waitCh(wg *sync.WaitGroup) <-chan struct{} {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	return ch
}

// atMost answers 503 at once to a request beyond its bound, and serves
// again once one of those in flight returns.
func TestAtMost(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{})
	h := atMost(2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("hold") {
			entered <- struct{}{}
			<-release
		}
	}))
	get := func(url string) int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", url, nil))
		return w.Code
	}
	finished := make(chan int, 2)
	for range 2 {
		go func() { finished <- get("/metrics?hold") }()
		<-entered
	}
	if code := get("/metrics"); code != http.StatusServiceUnavailable {
		t.Errorf("a third request with two in flight: %d, want 503", code)
	}
	release <- struct{}{}
	<-finished
	if code := get("/metrics"); code != http.StatusOK {
		t.Errorf("a request once one returned: %d, want 200", code)
	}
	close(release)
	<-finished
}

// The budget left is what the window allows, and nothing once baton gave
// up: restarts do not resume when the window moves on.
func TestBudgetRemaining(t *testing.T) {
	for _, tt := range []struct {
		used, limit int
		spent       bool
		want        int
	}{
		{0, 10, false, 10},
		{3, 10, false, 7},
		{10, 10, false, 0},
		{12, 10, false, 0},
		{0, 10, true, 0},
		{4, 10, true, 0},
	} {
		var snap lifecycle.Snapshot
		snap.Budget.Used, snap.Budget.Limit, snap.Budget.Spent = tt.used, tt.limit, tt.spent
		if got := budgetRemaining(snap); got != tt.want {
			t.Errorf("%d of %d used, spent %v: %d left, want %d", tt.used, tt.limit, tt.spent, got, tt.want)
		}
	}
}
