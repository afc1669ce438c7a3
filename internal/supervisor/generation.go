package supervisor

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
	cfg   *config.Config
	ls    []*listener // the listeners its workers get, in config order
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
	live     int
	deadline *time.Timer
	since    time.Time // when it was started, or when its drain began
}

func (g *generation) String() string { return fmt.Sprintf("generation %d", g.n) }

// readyCount returns how many slots hold a ready worker.
func (g *generation) readyCount() int {
	n := 0
	for _, w := range g.slots {
		if w != nil && w.state == ready {
			n++
		}
	}
	return n
}

func (g *generation) allReady() bool { return g.readyCount() == len(g.slots) }

// firstNotReady returns a started worker that is not ready, for messages.
func (g *generation) firstNotReady() *worker {
	for _, w := range g.slots {
		if w != nil && w.state != ready {
			return w
		}
	}
	return nil
}

// newGeneration opens (or reuses) the listeners cfg names and returns the
// next generation, not yet started.
func (s *supervisor) newGeneration(cfg *config.Config) (*generation, error) {
	ls, err := s.listenersFor(cfg)
	if err != nil {
		return nil, err
	}
	s.lastGen++
	return &generation{
		n:        s.lastGen,
		cfg:      cfg,
		ls:       ls,
		slots:    make([]*worker, cfg.Worker.Count),
		crashes:  make([]int, cfg.Worker.Count),
		lastExit: make([]string, cfg.Worker.Count),
		since:    time.Now(),
	}, nil
}

// startGeneration starts the first batch of g's workers and its readiness
// deadline.
func (s *supervisor) startGeneration(g *generation) error {
	g.deadline = s.after(g.cfg.Reload.Timeout.Std(), timerEvent{kind: readyDeadline, g: g})
	return s.startMore(g)
}

// startMore starts g's next slots: all of them, or up to reload.surge
// beyond those ready.
func (s *supervisor) startMore(g *generation) error {
	limit := len(g.slots)
	if surge := g.cfg.Reload.Surge; surge > 0 {
		limit = min(limit, g.readyCount()+surge)
	}
	for g.started < limit {
		slot := g.started
		g.started++
		if _, err := s.startWorker(g, slot); err != nil {
			return err
		}
	}
	return nil
}

// drainGeneration tells every worker of g to stop, with the drain
// deadline, and keeps at most reload.max_draining generations draining.
func (s *supervisor) drainGeneration(g *generation, why string) {
	if g.deadline != nil {
		g.deadline.Stop()
	}
	g.state = genDraining
	g.since = time.Now()
	for _, w := range s.workers {
		if w.gen == g {
			s.drainWorker(w)
		}
	}
	for i := range g.slots {
		g.slots[i] = nil
	}
	if g.live == 0 {
		s.generationGone(g)
		return
	}
	s.log.Info("draining "+g.String(), "why", why, "workers", g.live)
	s.draining = append(s.draining, g)
	max := s.cfg.Reload.MaxDraining
	for i := 0; s.phase != phaseStopping && len(s.draining)-i > max; i++ {
		oldest := s.draining[i]
		s.log.Warn("too many generations draining, killing the oldest", "generation", oldest.n, "max_draining", max)
		for _, w := range s.workers {
			if w.gen == oldest {
				w.signalGroup(sigkill)
			}
		}
	}
}

// generationGone forgets a drained generation and closes the listeners no
// generation uses any more.
func (s *supervisor) generationGone(g *generation) {
	for i, d := range s.draining {
		if d == g {
			s.draining = append(s.draining[:i], s.draining[i+1:]...)
			s.log.Info(g.String()+" drained", "generation", g.n, "after", time.Since(g.since).Round(time.Millisecond))
			break
		}
	}
	s.releaseListeners()
}
