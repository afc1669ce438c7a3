package lifecycle

import (
	"cmp"
	"slices"
)

// route tells the Env where connections go whenever that changed: after
// Start and after every event (docs/balancing.md).
func (m *Machine) route() {
	r := m.routes()
	if slices.Equal(r.Ready, m.routed.Ready) && slices.Equal(r.Slots, m.routed.Slots) && r.Shared == m.routed.Shared {
		return
	}
	m.routed = r
	m.env.Route(r)
}

// routes computes where connections go now.
func (m *Machine) routes() Routes {
	var ready []*worker
	slots := map[int]bool{}
	for _, w := range m.workers {
		switch w.state {
		case wReady:
			ready = append(ready, w)
			slots[w.slot] = true
		case wStarting:
			slots[w.slot] = true
		}
	}
	if !m.stoppingOrGone() && !m.budget.spent {
		// An empty slot waits for its replacement; with the budget spent
		// none comes.
		for _, g := range []*generation{m.current, m.next} {
			if g == nil {
				continue
			}
			for slot := range g.slots {
				slots[slot] = true
			}
		}
	}
	slices.SortFunc(ready, func(a, b *worker) int {
		if c := cmp.Compare(a.gen.n, b.gen.n); c != 0 {
			return c
		}
		return cmp.Compare(a.slot, b.slot)
	})
	r := Routes{Shared: m.Sharing()}
	for _, w := range ready {
		r.Ready = append(r.Ready, w.pid)
	}
	for slot := range slots {
		r.Slots = append(r.Slots, slot)
	}
	slices.Sort(r.Slots)
	return r
}
