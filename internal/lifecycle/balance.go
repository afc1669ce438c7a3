package lifecycle

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/batonhq/baton/internal/config"
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
	if !m.stoppingOrGone() && !m.budget.spent() {
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

// onStuck handles a worker that left a connection it was passed unread
// (round-robin): the shell took back what it had not read and passes it
// nothing more, so no client waits on it. It is replaced as a worker that
// misses its watchdog is, new first and against the restart budget, but
// then drained rather than killed: its channel is all that is known to
// be stuck, and what it serves may still finish within drain_timeout.
func (m *Machine) onStuck(ev Stuck) {
	w := m.workers[ev.PID]
	if w == nil || w.stuck {
		return
	}
	w.stuck = true
	why := fmt.Sprintf("left a connection unread on its channel for %s (worker.channel_timeout)", ev.Unread.Round(time.Millisecond))
	switch {
	case w.state == wDraining:
		m.log.Warn("draining worker is stuck", "slot", w.slot, "pid", w.pid, "generation", w.gen.n, "why", why)
	case w.gen == m.current && w.gen.holds(w) && !m.stoppingOrGone():
		m.replaceFirst(w, "stuck", why, SIGTERM)
	default:
		// Not serving yet (a reload's new worker): draining it fails its
		// generation when it exits, as any early exit does.
		m.log.Warn("worker is stuck, draining it", "slot", w.slot, "pid", w.pid, "generation", w.gen.n, "why", why)
		m.drainWorker(w)
	}
}

// BalanceSocket is what the shell found out about a stream listener
// before the first worker starts, for ChooseBalance.
type BalanceSocket struct {
	Name string
	// TCP: the listener's address is tcp://, tcp4:// or tcp6://; else it
	// is a unix stream socket.
	TCP bool
	// From says where the socket came from when it was open before this
	// baton started: "systemd" (a .socket unit) or "fd store" (a baton
	// before this one bound it, and systemd kept it). "" when baton binds
	// it itself, as the mode needs. The rest is known of such a socket
	// only.
	From string
	// Kind is what the socket is: "tcp", "mptcp", "unix" or "other".
	Kind string
	// ReusePort: SO_REUSEPORT is set on it.
	ReusePort bool
	// Beside is why no socket can be bound beside it (the kernel refused
	// this baton's user a place in its group), "" if one can.
	Beside string
}

// ChooseBalance decides what worker.balance = "auto" means for a baton
// whose stream listeners are socks, and says why (docs/balancing.md,
// "auto"). parent is the mode of the baton this one takes over from ("" if
// none): a self-upgrade keeps it. Else reuseport, if every TCP listener
// can have a socket per worker; else shared. Never round-robin: it needs
// workers that read connections from their channel, which baton cannot
// tell from outside, and a worker that does not is replaced again and
// again until the restart budget is spent.
func ChooseBalance(socks []BalanceSocket, parent string) (mode, why string) {
	if parent != "" {
		return parent, "the baton this one took over from balanced so, and a self-upgrade keeps the mode (restart baton to choose again)"
	}
	var tcp, unix, refused []string
	for _, s := range socks {
		if !s.TCP {
			unix = append(unix, strconv.Quote(s.Name))
			continue
		}
		if r := refusal(s); r != "" {
			refused = append(refused, fmt.Sprintf("listener %q %s", s.Name, r))
			continue
		}
		tcp = append(tcp, s.Name)
	}
	switch {
	case len(refused) > 0:
		return config.BalanceShared, strings.Join(refused, "; ")
	case len(tcp) == 0 && len(unix) == 0:
		return config.BalanceShared, "no stream listener: nothing to balance"
	case len(tcp) == 0:
		return config.BalanceShared, "no TCP listener: reuseport gives TCP listeners alone a socket per worker (round-robin passes on a unix socket's connections, to workers that read them from their channel)"
	case len(unix) > 0:
		return config.BalanceReusePort, fmt.Sprintf("every TCP listener can have a socket per worker (unix listener %s shared)", strings.Join(unix, ", "))
	}
	return config.BalanceReusePort, "every TCP listener can have a socket per worker"
}

// refusal says why s cannot have a socket per worker, "" if it can.
func refusal(s BalanceSocket) string {
	switch {
	case s.From == "":
		return "" // baton binds it with SO_REUSEPORT
	case s.Kind == "mptcp":
		return fmt.Sprintf("came from %s as an MPTCP socket, to which the kernel attaches no program that steers connections", s.From)
	case s.Kind != "tcp":
		return fmt.Sprintf("came from %s as a %s socket, not TCP", s.From, s.Kind)
	case !s.ReusePort && s.From == "systemd":
		return "came from systemd without SO_REUSEPORT (set ReusePort=yes in its .socket unit)"
	case !s.ReusePort:
		return fmt.Sprintf("came from %s without SO_REUSEPORT (a baton that balanced another way bound it)", s.From)
	case s.Beside != "":
		return fmt.Sprintf("came from %s, and baton cannot bind sockets beside it: %s", s.From, s.Beside)
	}
	return ""
}
