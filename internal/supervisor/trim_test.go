package supervisor

import "testing"

// Baton trims at the tick after one with work, and when idle every
// trimIdle ticks.
func TestIdleTrim(t *testing.T) {
	var tr idleTrim
	tr.work()
	if !tr.tick() {
		t.Fatal("no trim at the tick after work")
	}
	for i := 1; i < trimIdle; i++ {
		if tr.tick() {
			t.Fatalf("trim at idle tick %d, want none before %d", i, trimIdle)
		}
	}
	if !tr.tick() {
		t.Fatalf("no trim at idle tick %d", trimIdle)
	}
	tr.tick()
	tr.work()
	if !tr.tick() {
		t.Fatal("no trim after work that followed an idle trim")
	}
	if tr.tick() {
		t.Fatal("trim at the tick after the one that trimmed")
	}
}
