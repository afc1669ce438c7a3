package loadtest

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Latencies are counted in buckets of about 3 %: exact below 64 µs, then
// 32 per power of two, up to 2^40 µs. A quantile is its bucket's upper
// bound.
const (
	latencyExact = 64
	latencySub   = 32
	latencyCount = latencyExact + latencySub*34
)

// latencies is a histogram safe for concurrent use.
type latencies [latencyCount]atomic.Int64

func latencyBucket(d time.Duration) int {
	us := uint64(max(d.Microseconds(), 0))
	if us < latencyExact {
		return int(us)
	}
	// us in [2^e, 2^(e+1)), e >= 6: 32 buckets for each such range.
	e := bits.Len64(us) - 1
	i := latencyExact + (e-6)*latencySub + int((us>>(e-5))&(latencySub-1))
	return min(i, latencyCount-1)
}

// latencyUpper is the largest latency counted in bucket i.
func latencyUpper(i int) time.Duration {
	if i < latencyExact {
		return time.Duration(i) * time.Microsecond
	}
	e := (i-latencyExact)/latencySub + 6
	sub := uint64((i - latencyExact) % latencySub)
	lo := uint64(1)<<e | sub<<(e-5)
	return time.Duration(lo+(uint64(1)<<(e-5))-1) * time.Microsecond
}

func (l *latencies) add(d time.Duration) { l[latencyBucket(d)].Add(1) }

// Latency is the distribution of OK requests' latencies (dial, if any,
// to the end of the response body).
type Latency struct {
	counts []int64
	total  int64
}

func (l *latencies) snapshot() Latency {
	out := Latency{counts: make([]int64, latencyCount)}
	for i := range l {
		out.counts[i] = l[i].Load()
		out.total += out.counts[i]
	}
	return out
}

// Quantile returns the latency below which q (0 to 1) of the requests
// took, to about 3 %; 0 without requests.
func (l Latency) Quantile(q float64) time.Duration {
	if l.total == 0 {
		return 0
	}
	rank := int64(q*float64(l.total) + 0.5)
	rank = min(max(rank, 1), l.total)
	var seen int64
	for i, n := range l.counts {
		seen += n
		if seen >= rank {
			return latencyUpper(i)
		}
	}
	return latencyUpper(latencyCount - 1)
}

// add counts o's latencies into l.
func (l *Latency) add(o Latency) {
	if o.total == 0 {
		return
	}
	if l.counts == nil {
		l.counts = make([]int64, latencyCount)
	}
	for i, n := range o.counts {
		l.counts[i] += n
	}
	l.total += o.total
}
