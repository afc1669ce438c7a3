package lifecycle

import (
	"fmt"

	"github.com/batonhq/baton/internal/config"
)

// Scaled is a count the operator set with `baton scale`, beside the
// configuration's worker.count it departs from. It holds across reloads
// and self-upgrades until a configuration comes whose worker.count is not
// Config (the operator's count was for the old one) or the operator scales
// again. The zero Scaled: the pool follows the configuration.
type Scaled struct {
	Workers int // the count the pool is kept at
	Config  int // the worker.count in force when it was set
}

// Count is how many workers a generation of cfg gets: the scaled count
// while cfg's worker.count is the one it was scaled from, else cfg's.
func (s Scaled) Count(cfg *config.Config) int {
	if s.Workers > 0 && cfg.Worker.Count == s.Config {
		return s.Workers
	}
	return cfg.Worker.Count
}

// String says how the count departs from the configuration's, for status:
// "scaled to 4, config 2"; "" when it does not.
func (s Scaled) String() string {
	if s.Workers == 0 || s.Workers == s.Config {
		return ""
	}
	return fmt.Sprintf("scaled to %d, config %d", s.Workers, s.Config)
}

// scaledOf is g's departure from its configuration's count: the zero
// Scaled when g has as many slots as its worker.count.
func scaledOf(g *generation) Scaled {
	if g == nil || len(g.slots) == g.cfg.Worker.Count {
		return Scaled{}
	}
	return Scaled{Workers: len(g.slots), Config: g.cfg.Worker.Count}
}

// Scaled is the serving generation's departure from its configuration's
// count (the zero Scaled if none): what a self-upgrade hands over.
func (m *Machine) Scaled() Scaled { return scaledOf(m.current) }

// countFor is how many workers a new generation of cfg gets: a reload
// keeps the serving generation's scaled count while worker.count is
// unchanged; the first generation keeps the count a self-upgrade handed
// over.
func (m *Machine) countFor(cfg *config.Config) int {
	s := m.handed
	if m.current != nil {
		s = m.Scaled()
	}
	n := s.Count(cfg)
	switch {
	case n != cfg.Worker.Count:
		m.log.Info("keeping the scaled count: worker.count is unchanged", "workers", n, "worker.count", cfg.Worker.Count)
	case s.Workers > 0 && s.Workers != n:
		m.log.Info("worker.count changed: it replaces the scaled count", "scaled", s.Workers, "worker.count", cfg.Worker.Count, "was", s.Config)
	}
	return n
}
