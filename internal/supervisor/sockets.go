package supervisor

import (
	"context"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/roundrobin"
	"github.com/batonhq/baton/internal/systemd"
)

// sockets is the supervisor's part that carries out lifecycle.Sockets:
// the listeners it holds for the whole life of the service (each one
// bound, taken from systemd and closed in listeners.go), what keeps them
// in systemd's fd store, and how connections reach the workers. Route,
// and the SO_REUSEPORT groups internal/steer decides on, are
// balance.go's.
type sockets struct {
	listeners []*listener
	// balance is the mode in force, which cannot change (worker.balance,
	// or what auto chose); auto says why auto chose it, "" when the
	// configuration named it.
	balance, auto string
	// rr passes connections to the workers (worker.balance =
	// "round-robin"); nil in the other modes.
	rr *roundrobin.Balancer
}

// Open makes sure every listener cfg names is open: a socket from
// systemd of the same name, an open one of the same address, or a newly
// bound one; store: new ones may go to systemd's fd store.
func (s *supervisor) Open(cfg *config.Config, store bool) error {
	var bound []*listener
	for _, c := range cfg.Listen {
		if s.findListener(c) != nil {
			continue
		}
		l, err := bind(context.Background(), c, perWorker(s.balance, c))
		if err != nil {
			closeListeners(bound, false)
			return err
		}
		bound = append(bound, &l)
	}
	s.listeners = append(s.listeners, bound...)
	if store {
		s.storeListeners(cfg)
	}
	return s.openBalance(cfg)
}

// CloseAll closes every listener (at stop); shared: another baton uses
// them, so their paths stay.
func (s *supervisor) CloseAll(shared bool) {
	if s.rr != nil {
		s.rr.Close()
		if !shared {
			// Round-robin made them non-blocking; a socket systemd keeps
			// goes to the next baton as it came, blocking.
			for _, l := range s.listeners {
				unix.SetNonblock(l.fd, false)
			}
		}
	}
	for _, l := range s.listeners {
		s.groups.Remove(l.group)
	}
	closeListeners(s.listeners, shared)
	s.listeners = nil
}

// Release closes the self-bound listeners that no configuration in inUse
// names (a listener removed from the config, once the generations that
// used it have drained).
func (s *supervisor) Release(inUse []*config.Config, inForce *config.Config) {
	used := map[*listener]bool{}
	for _, cfg := range inUse {
		for _, c := range cfg.Listen {
			used[s.findListener(c)] = true
		}
	}
	kept := s.listeners[:0]
	restore := false
	for _, l := range s.listeners {
		if used[l] || l.inherited {
			kept = append(kept, l)
			continue
		}
		s.log.Info("closing listener no generation uses", "name", l.name, "address", l.network+"://"+l.addr)
		if s.rr != nil {
			s.rr.Unlisten(l.fd)
		}
		if l.stored {
			if err := systemd.RemoveStoredFD(l.name); err != nil {
				s.log.Warn("cannot remove socket from systemd's fd store", "name", l.name, "err", err)
			}
			// That removed every socket of the name: one that moved to
			// another address is stored again below.
			for _, o := range s.listeners {
				if o != l && o.stored && o.name == l.name {
					o.stored, restore = false, true
				}
			}
		}
		if l.passKey != "" {
			// The upgrader's copy cannot be taken back (a self-upgrade
			// failed since it was registered): shut the socket down so
			// that copy, passed on until the next self-upgrade drops it,
			// accepts nothing meanwhile.
			unix.Shutdown(l.fd, unix.SHUT_RDWR)
		}
		for _, gs := range l.extra() {
			if gs.PassKey != "" {
				unix.Shutdown(gs.FD, unix.SHUT_RDWR)
			}
		}
		s.groups.Remove(l.group)
		l.close(false)
	}
	clear(s.listeners[len(kept):])
	s.listeners = kept
	if restore {
		s.storeListeners(inForce)
	}
}

func (s *supervisor) findListener(c config.Listener) *listener {
	for _, l := range s.listeners {
		if l.inherited && l.name == c.Name {
			return l
		}
	}
	for _, l := range s.listeners {
		if !l.inherited && l.network == c.Network && l.addr == c.Addr {
			return l
		}
	}
	return nil
}

// storeListeners puts every self-bound listener not yet there into
// systemd's fd store, when [systemd] fd_store is on.
func (s *supervisor) storeListeners(cfg *config.Config) {
	if !cfg.Systemd.FDStore {
		return
	}
	for _, l := range s.listeners {
		if l.inherited || l.stored {
			continue
		}
		if err := systemd.StoreFD(l.name, l.fd); err != nil {
			s.log.Warn("cannot keep socket in systemd's fd store", "name", l.name, "err", err)
			continue
		}
		l.stored = true
		s.log.Info("socket kept in systemd's fd store", "name", l.name)
	}
}
