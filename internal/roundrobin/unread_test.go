package roundrobin

import (
	"net/netip"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/wire"
)

// conns returns unanswered connections whose lines begin at starts.
func conns(starts ...uint64) []passed {
	var ps []passed
	for i, s := range starts {
		ps = append(ps, passed{seq: uint64(i + 1), start: s})
	}
	return ps
}

func TestFirstUnread(t *testing.T) {
	tests := []struct {
		name     string
		unacked  []passed
		consumed uint64
		want     uint64 // its start; 0 with ok false
		ok       bool
	}{
		{"none unanswered", nil, 0, 0, false},
		{"nothing read", conns(0, 100, 200), 0, 0, true},
		{"all read, none answered: a busy worker", conns(0, 100, 200), 300, 0, false},
		{"one read", conns(0, 100, 200), 100, 100, true},
		{"half a line read: the worker has its descriptor", conns(0, 100, 200), 150, 200, true},
		{"answered ones are gone", conns(300, 400), 350, 400, true},
		{"read past what is unanswered", conns(300), 1000, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := firstUnread(tt.unacked, tt.consumed)
			if ok != tt.ok || p.start != tt.want {
				t.Errorf("firstUnread = %d, %v; want %d, %v", p.start, ok, tt.want, tt.ok)
			}
		})
	}
}

// A sequence of checks, each a look at how far the worker read: it is
// stuck once the same connection was seen unread for the bound.
func TestWatchObserve(t *testing.T) {
	const bound = time.Second
	type look struct {
		at       time.Duration // since the first check
		unacked  []passed
		consumed uint64
		unread   time.Duration
		stuck    bool
	}
	tests := []struct {
		name  string
		bound time.Duration
		looks []look
	}{
		{"never reads", bound, []look{
			{0, conns(0), 0, 0, false},
			{500 * time.Millisecond, conns(0, 100), 0, 500 * time.Millisecond, false},
			{999 * time.Millisecond, conns(0, 100), 0, 999 * time.Millisecond, false},
			{time.Second, conns(0, 100), 0, time.Second, true},
		}},
		{"reads slowly, one line a check: never stuck", bound, []look{
			{0, conns(0, 100, 200), 0, 0, false},
			{600 * time.Millisecond, conns(0, 100, 200), 100, 0, false},
			{1200 * time.Millisecond, conns(0, 100, 200), 200, 0, false},
			{1800 * time.Millisecond, conns(0, 100, 200), 300, 0, false},
			{2400 * time.Millisecond, conns(0, 100, 200), 300, 0, false},
		}},
		{"reads, then stops: counted from the line it stopped at", bound, []look{
			{0, conns(0, 100), 0, 0, false},
			{500 * time.Millisecond, conns(0, 100), 100, 0, false},
			{time.Second, conns(0, 100), 100, 500 * time.Millisecond, false},
			{1500 * time.Millisecond, conns(0, 100), 100, time.Second, true},
		}},
		{"answers come, nothing unread: the watch starts over", bound, []look{
			{0, conns(0), 0, 0, false},
			{900 * time.Millisecond, nil, 100, 0, false},
			{time.Second, conns(100), 100, 0, false},
			{1800 * time.Millisecond, conns(100), 100, 800 * time.Millisecond, false},
		}},
		{"a bound of 0 is never reached", 0, []look{
			{0, conns(0), 0, 0, false},
			{time.Hour, conns(0), 0, time.Hour, false},
		}},
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w watch
			for i, l := range tt.looks {
				unread, stuck := w.observe(start.Add(l.at), tt.bound, l.unacked, l.consumed)
				if unread != l.unread || stuck != l.stuck {
					t.Errorf("look %d at %s: %s, %v; want %s, %v", i, l.at, unread, stuck, l.unread, l.stuck)
				}
			}
		})
	}
}

func TestTakenBack(t *testing.T) {
	line := func(seq uint64) string {
		return string(wire.AppendConn(nil, wire.ConnStart("http"), seq, netip.AddrPort{}))
	}
	whole := line(17)
	tests := []struct {
		name string
		data string
		seq  uint64
		ok   bool
	}{
		{"a whole line", whole, 17, true},
		{"the rest of a line the worker began, then a whole one", whole[40:] + line(18), 18, true},
		{"only the rest of a line", whole[40:], 0, false},
		{"the rest of the inner object", whole[len(whole)-len(`{"cmd":"BATON_CONN","listener":"http","seq":17}}`)-1:], 0, false},
		{"no end of line", whole[:len(whole)-1], 0, false},
		{"an answer, not a connection", `{"cmd":"BATON_ACK","seq":17}` + "\n", 0, false},
		{"empty", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq, ok := takenBack([]byte(tt.data))
			if seq != tt.seq || ok != tt.ok {
				t.Errorf("takenBack(%q) = %d, %v; want %d, %v", tt.data, seq, ok, tt.seq, tt.ok)
			}
		})
	}
}
