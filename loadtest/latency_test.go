package loadtest

import (
	"net/http"
	"testing"
	"time"
)

// Every latency falls in a bucket whose upper bound is at or above it and
// within 3.2 % of it; buckets grow with the latency.
func TestLatencyBuckets(t *testing.T) {
	prev := -1
	for us := int64(0); us < 1<<36; us = us + 1 + us/97 {
		d := time.Duration(us) * time.Microsecond
		i := latencyBucket(d)
		if i < prev {
			t.Fatalf("bucket of %v is %d, below the previous %d", d, i, prev)
		}
		prev = i
		up := latencyUpper(i)
		if up < d || float64(up-d) > 0.032*float64(d)+float64(time.Microsecond) {
			t.Fatalf("%v in bucket %d with upper bound %v", d, i, up)
		}
	}
}

func TestQuantile(t *testing.T) {
	var l latencies
	for i := 1; i <= 100; i++ {
		l.add(time.Duration(i) * time.Millisecond)
	}
	s := l.snapshot()
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		got := s.Quantile(tt.q)
		if got < tt.want || float64(got-tt.want) > 0.032*float64(tt.want) {
			t.Errorf("Quantile(%v) = %v, want %v within 3.2 %%", tt.q, got, tt.want)
		}
	}
	if (Latency{}).Quantile(0.5) != 0 {
		t.Error("the quantile of nothing is not 0")
	}
}

// A run with a timeline counts every request in the bucket it ended in,
// and measures latencies of the OK ones.
func TestTimelineAndLatency(t *testing.T) {
	addr, _ := httpServer(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond)
		w.Write([]byte("ok"))
	})
	r := finish(t, start(t, Options{Addr: addr, Concurrency: 4, Duration: 500 * time.Millisecond, Timeline: 100 * time.Millisecond}))
	var ok, failed int64
	for _, b := range r.Timeline {
		ok, failed = ok+b.OK, failed+b.Failed
	}
	if ok != r.OK || failed != r.Failed() || len(r.Timeline) < 5 || len(r.Timeline) > 7 {
		t.Errorf("timeline %v: %d ok, %d failed in %d buckets; the run had %d ok, %d failed over 500ms", r.Timeline, ok, failed, len(r.Timeline), r.OK, r.Failed())
	}
	if p50 := r.Latency.Quantile(0.5); p50 < 2*time.Millisecond || p50 > time.Second {
		t.Errorf("p50 %v for a server that takes 2ms", p50)
	}
}
