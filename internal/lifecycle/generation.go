package lifecycle

import (
	"fmt"
	"time"

	"github.com/batonhq/baton/internal/config"
)

type genState int

const (
	genStarting genState = iota // its workers are starting; not serving yet
	genServing                  // the current generation
	genDraining                 // replaced, rolled back, or stopping: its workers are leaving
)

// generation is one set of workers started from one configuration. A
// reload starts a new generation; only when all of it is ready does the
// previous one drain.
type generation struct {
	n     int
	cfg   *config.Config // the configuration it was started from
	state genState
	// slots holds the serving (or starting) worker of each slot; nil while
	// a slot waits for its replacement.
	slots []*worker
	// crashes counts each slot's consecutive crashes, for the backoff.
	crashes []int
	// lastExit says how each slot's last worker ended, for messages.
	lastExit []string
	// started is how many slots have been started so far (reload.surge).
	started int
	// live counts its worker processes not yet reaped.
	live         int
	stopDeadline func()
	since        time.Time // when it was started, or when its drain began
}

func (g *generation) String() string { return fmt.Sprintf("generation %d", g.n) }

// readyCount returns how many slots hold a ready worker.
func (g *generation) readyCount() int {
	n := 0
	for _, w := range g.slots {
		if w != nil && w.state == wReady {
			n++
		}
	}
	return n
}

func (g *generation) allReady() bool { return g.readyCount() == len(g.slots) }

// holds reports whether w is the worker of its slot (not replaced, and
// the slot not scaled away).
func (g *generation) holds(w *worker) bool { return w.slot < len(g.slots) && g.slots[w.slot] == w }

// resize makes g n slots wide: new slots are empty, the ones beyond n
// are forgotten (their workers drain).
func (g *generation) resize(n int) {
	for len(g.slots) < n {
		g.slots, g.crashes, g.lastExit = append(g.slots, nil), append(g.crashes, 0), append(g.lastExit, "")
	}
	g.slots, g.crashes, g.lastExit = g.slots[:n], g.crashes[:n], g.lastExit[:n]
	g.started = min(g.started, n)
}

// newGeneration opens (or reuses) the sockets cfg names and returns the
// next generation, not yet started, as wide as countFor says.
func (m *Machine) newGeneration(cfg *config.Config) (*generation, error) {
	n := m.countFor(cfg)
	// A baton taking over stores sockets once in charge: until then its
	// parent may still fail over.
	if err := m.env.Open(cfg, m.charge == inCharge); err != nil {
		return nil, err
	}
	m.lastGen++
	return &generation{
		n:        m.lastGen,
		cfg:      cfg,
		slots:    make([]*worker, n),
		crashes:  make([]int, n),
		lastExit: make([]string, n),
		since:    m.env.Now(),
	}, nil
}

// startGeneration starts the first batch of g's workers and its readiness
// deadline.
func (m *Machine) startGeneration(g *generation) error {
	g.stopDeadline = m.env.After(g.cfg.Reload.Timeout.Std(), Timer{kind: readyDeadline, g: g})
	return m.startMore(g)
}

// startMore starts g's next slots. The first generation starts whole (or
// reload.surge beyond those ready). A reload with reload.surge = K > 0
// rolls: new workers start while baton has fewer than count+K worker
// processes (count: the larger of the old and the new generation's),
// each new one that is ready drains the old worker of its slot, and the
// next one starts once that has exited; so the pool never grows by more
// than K. Without surge the whole new generation starts at once.
func (m *Machine) startMore(g *generation) error {
	limit := len(g.slots)
	surge := g.cfg.Reload.Surge
	if surge > 0 && !m.rolling(g) {
		limit = min(limit, g.readyCount()+surge)
	}
	for g.started < limit {
		if m.rolling(g) && len(m.workers) >= max(len(g.slots), len(m.current.slots))+surge {
			return nil // once an old worker has exited
		}
		slot := g.started
		g.started++
		if _, err := m.startWorker(g, slot, nil); err != nil {
			return err
		}
		if m.rolling(g) {
			// Each step has reload.timeout to get ready.
			g.stopDeadline()
			g.stopDeadline = m.env.After(g.cfg.Reload.Timeout.Std(), Timer{kind: readyDeadline, g: g})
		}
	}
	return nil
}

// rolling reports whether g is a reload's new generation that replaces
// the serving one slot by slot (reload.surge > 0).
func (m *Machine) rolling(g *generation) bool {
	return g == m.next && m.current != nil && g.cfg.Reload.Surge > 0
}

// switchSlot drains the serving worker of the slot a rolling reload's new
// worker w just took over.
func (m *Machine) switchSlot(w *worker) {
	old := m.current
	if w.slot >= len(old.slots) || old.slots[w.slot] == nil {
		return
	}
	prev := old.slots[w.slot]
	old.slots[w.slot] = nil
	m.log.Info("rolling reload: slot switched", "slot", w.slot, "new", w.pid, "old", prev.pid, "generation", w.gen.n)
	m.drainWorker(prev)
}

// continueRolling starts the next workers of a rolling reload, if there is
// room now.
func (m *Machine) continueRolling() {
	if g := m.next; g != nil && m.rolling(g) {
		m.startNext(g)
	}
}

// promote makes a generation whose workers are all ready the serving one,
// and drains the one it replaces.
func (m *Machine) promote(g *generation) {
	g.stopDeadline()
	g.state = genServing
	old := m.current
	m.current, m.next, m.inForce = g, nil, g
	if old != nil && m.budget.reset() {
		m.log.Info("restart budget: a reload brings a full generation back, restarts resume")
	}
	if old != nil {
		m.drainGeneration(old, "replaced by "+g.String())
		m.finishReload(nil)
		return
	}
	// Every ready worker gets connections before baton says it is ready:
	// a client that connects on READY=1 (or on this line) must not find
	// the last one's socket left out, its keep-alive connections all on
	// the others (Step's route would come only after).
	m.route()
	m.log.Info("all workers ready", "count", len(g.slots), "generation", g.n)
	if m.charge == parentInCharge {
		m.takeOver()
		return
	}
	m.phase = running
	m.status = m.statusLine()
	m.sendSystemd("READY=1\nSTATUS=" + m.status)
	m.env.Serving() // until then no self-upgrade may start
	m.runQueued()
}

// drainGeneration tells every worker of g to stop, with the drain
// deadline, and keeps at most reload.max_draining generations draining.
func (m *Machine) drainGeneration(g *generation, why string) {
	if g.stopDeadline != nil {
		g.stopDeadline()
	}
	g.state = genDraining
	g.since = m.env.Now()
	for _, w := range m.live() {
		if w.gen == g {
			m.drainWorker(w)
		}
	}
	clear(g.slots)
	if g.live == 0 {
		m.generationGone(g)
		return
	}
	m.log.Info("draining "+g.String(), "why", why, "workers", g.live)
	m.draining = append(m.draining, g)
	limit := m.config().Reload.MaxDraining
	for i := 0; !m.stoppingOrGone() && len(m.draining)-i > limit; i++ {
		oldest := m.draining[i]
		m.log.Warn("too many generations draining, killing the oldest", "generation", oldest.n, "max_draining", limit)
		for _, w := range m.live() {
			if w.gen == oldest {
				m.env.Signal(w.pid, SIGKILL, Group)
			}
		}
	}
}

// generationGone forgets a drained generation and closes the sockets no
// generation uses any more.
func (m *Machine) generationGone(g *generation) {
	for i, d := range m.draining {
		if d == g {
			m.draining = append(m.draining[:i], m.draining[i+1:]...)
			m.log.Info(g.String()+" drained", "generation", g.n, "after", m.env.Now().Sub(g.since).Round(time.Millisecond))
			break
		}
	}
	m.releaseSockets()
}

// releaseSockets closes the sockets no generation uses, unless another
// baton may still use them.
func (m *Machine) releaseSockets() {
	if m.Sharing() {
		return
	}
	var inUse []*config.Config
	for _, g := range m.generations() {
		inUse = append(inUse, g.cfg)
	}
	m.env.Release(inUse, m.config())
}
