package lifecycle

import (
	"maps"
	"testing"
	"time"
)

// TestBudget feeds the restart budget alone a sequence of restarts at
// given offsets, with a limit of 2 per minute, and checks what each
// spend answers and what the budget shows after it.
func TestBudget(t *testing.T) {
	type step struct {
		at     time.Duration // since t0
		op     string        // spend (slot 0, crash), operator, reset
		ok     bool          // spend's answer; reset's: it had been spent
		n      int           // spend's count within the window
		recent int           // after the step
		spent  bool
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		steps    []step
		total    int
		byReason map[string]int
		giveUps  int
		slot0    int
	}{
		{"within the limit", []step{
			{at: 0, op: "spend", ok: true, n: 1, recent: 1},
			{at: 10 * time.Second, op: "spend", ok: true, n: 2, recent: 2},
		}, 2, map[string]int{"crash": 2}, 0, 2},
		{"one too many spends it", []step{
			{at: 0, op: "spend", ok: true, n: 1, recent: 1},
			{at: time.Second, op: "spend", ok: true, n: 2, recent: 2},
			{at: 2 * time.Second, op: "spend", ok: false, n: 2, recent: 2, spent: true},
		}, 2, map[string]int{"crash": 2}, 1, 2},
		{"the window slides", []step{
			{at: 0, op: "spend", ok: true, n: 1, recent: 1},
			{at: time.Second, op: "spend", ok: true, n: 2, recent: 2},
			{at: time.Minute, op: "spend", ok: true, n: 2, recent: 2}, // the first one has left the window
			{at: 2*time.Minute + time.Second, op: "spend", ok: true, n: 1, recent: 1},
		}, 4, map[string]int{"crash": 4}, 0, 4},
		{"operator restarts are counted, not spent", []step{
			{at: 0, op: "operator", recent: 0},
			{at: 0, op: "operator", recent: 0},
			{at: 0, op: "operator", recent: 0},
			{at: time.Second, op: "spend", ok: true, n: 1, recent: 1},
		}, 1, map[string]int{"operator": 3, "crash": 1}, 0, 1},
		{"reset lets restarts resume, the window stays", []step{
			{at: 0, op: "spend", ok: true, n: 1, recent: 1},
			{at: 0, op: "spend", ok: true, n: 2, recent: 2},
			{at: 0, op: "spend", ok: false, n: 2, recent: 2, spent: true},
			{at: time.Second, op: "reset", ok: true, recent: 2},
			{at: time.Second, op: "reset", ok: false, recent: 2},
			{at: time.Minute, op: "spend", ok: true, n: 1, recent: 1},
		}, 3, map[string]int{"crash": 3}, 1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b budget
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				switch s.op {
				case "spend":
					n, ok := b.spend(now, 2, time.Minute, 0, "crash")
					if n != s.n || ok != s.ok {
						t.Fatalf("step %d: spend = %d, %v; want %d, %v", i, n, ok, s.n, s.ok)
					}
				case "operator":
					b.operator()
				case "reset":
					if was := b.reset(); was != s.ok {
						t.Fatalf("step %d: reset = %v, want %v", i, was, s.ok)
					}
				}
				if got := b.recent(now, time.Minute); got != s.recent {
					t.Errorf("step %d: recent = %d, want %d", i, got, s.recent)
				}
				if b.spent() != s.spent {
					t.Errorf("step %d: spent = %v, want %v", i, b.spent(), s.spent)
				}
			}
			total, byReason, giveUps := b.counts()
			if total != tt.total || !maps.Equal(byReason, tt.byReason) || giveUps != tt.giveUps || b.restarts(0) != tt.slot0 {
				t.Errorf("counts = %d, %v, %d, slot 0 %d; want %d, %v, %d, %d", total, byReason, giveUps, b.restarts(0), tt.total, tt.byReason, tt.giveUps, tt.slot0)
			}
		})
	}
}
