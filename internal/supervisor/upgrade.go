package supervisor

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/internal/deal"
	"github.com/batonhq/baton/internal/lifecycle"
	"github.com/batonhq/baton/internal/spawn"
	"github.com/batonhq/baton/internal/steer"
	"github.com/batonhq/baton/internal/systemd"
	"github.com/batonhq/baton/internal/upgrade"
)

// A self-upgrade (docs/architecture.md, "Self-upgrade") replaces the running supervisor by a new
// process of the executable on disk, without closing a socket:
//
//  1. The old supervisor starts its successor through the upgrader, which
//     passes every listener and the control socket, with a note saying
//     what each one is (upgradeNote).
//  2. The successor takes the sockets its configuration uses and starts
//     its own generation of workers on them, saying nothing to systemd.
//  3. Once they are ready it tells the old one (upgrader Ready): from then
//     on it is in charge. It sends MAINPID=<its pid> and READY=1, and a
//     BARRIER=1, and answers on the control socket.
//  4. The old supervisor, still systemd's main process until then, sends
//     MAINPID=<successor> and READY=1 too (so NotifyAccess=main works as
//     well as all), waits for systemd's answer to its BARRIER=1, drains
//     its workers and exits. It is silent towards systemd from step 3.
//
// A successor that fails (cannot start, exits, or its workers are not
// ready within its reload.timeout) drains what it started and exits,
// saying why; the old one never stopped serving and reports the failure
// like a failed reload. A successor still not done after the old one's
// own upgrade deadline is sent SIGTERM, and SIGKILL a drain later.

// upgrades is the supervisor's part that carries out lifecycle.Upgrades:
// the upgrader, what a successor is started from, and in a successor
// what it took over from its parent.
type upgrades struct {
	upg *upgrade.Upgrader
	// exePath is the executable a self-upgrade runs; exe is the running
	// one, to notice a package upgrade replaced it.
	exePath string
	exe     os.FileInfo
	// parent is the baton this one takes over from (0 if none): until
	// this one is in charge, it leaves shared sockets and paths alone.
	parent int
	// unstore are sockets in systemd's fd store the config no longer has,
	// dropped once this supervisor is in charge.
	unstore []string
	// passSeq numbers the sockets registered with the upgrader.
	passSeq int
}

func (s *supervisor) CanUpgrade() error {
	switch {
	case s.upg == nil:
		return errors.New("supervisor: self-upgrade: not possible here (only `baton run` can replace itself)")
	case os.Getpid() == 1:
		// Its exit would end the container, successor and all.
		return errors.New("supervisor: self-upgrade: baton is PID 1 here; restart the container to run a new version")
	}
	return nil
}

// ExeChanged reports whether the executable a self-upgrade would run is
// no longer the running one (a package upgrade replaced the file, or
// repointed a symlink to it).
func (s *supervisor) ExeChanged() bool {
	if s.exe == nil || s.exePath == "" {
		return false
	}
	fi, err := os.Stat(s.exePath)
	return err == nil && !os.SameFile(fi, s.exe)
}

func (s *supervisor) Upgrade(lastGen int, scaled lifecycle.Scaled) error {
	err := s.passListeners(false)
	var b []byte
	if err == nil {
		n := s.upgradeNote(lastGen, s.balance)
		n.Scaled, n.ScaledFrom = scaled.Workers, scaled.Config
		b, err = json.Marshal(n)
	}
	if err != nil {
		return err
	}
	s.groups.LeaveFree()
	s.log.Info("self-upgrade: starting a new baton", "executable", os.Args[0])
	note := string(b)
	// tableflip waits for the new baton itself: the reaper leaves it be.
	s.reaper.spareOthers(true)
	s.goTask(func() {
		pid, err := s.upg.Upgrade(note)
		s.reaper.spareOthers(false)
		s.post(lifecycle.UpgradeDone{PID: pid, Err: err, ParentRunning: errors.Is(err, upgrade.ErrParentRunning)})
	})
	return nil
}

func (s *supervisor) SignalSuccessor(sig lifecycle.Signal) bool {
	return s.upg != nil && s.upg.Signal(unixSignal(sig))
}

func (s *supervisor) NoMoreUpgrades() {
	if s.upg != nil {
		s.upg.Stop()
	}
}

func (s *supervisor) Serving() {
	if s.upg == nil {
		return
	}
	// Until then tableflip refuses to upgrade.
	if err := s.upg.Ready(); err != nil {
		s.log.Warn("self-upgrades will not work", "err", err)
	}
}

// HandOver tells systemd the successor is the main process (so that
// NotifyAccess=main works as well as all), leaves the control socket to
// it, and asks it how it is once systemd has switched.
func (s *supervisor) HandOver(pid int) {
	state := "READY=1"
	if pid > 0 {
		state = fmt.Sprintf("MAINPID=%d\nREADY=1", pid)
	}
	if err := s.toSystemd(state); err != nil {
		s.log.Warn("cannot tell systemd the new main pid", "err", err)
	}
	s.groups.HandedOver = true // its workers are steered by the successor now
	s.control.close(true)
	s.metrics.close()
	path := s.control.path // the successor answers where this one did
	s.goTask(func() {
		// This baton exits only once systemd has switched to the new one.
		ctx, cancel := context.WithTimeout(context.Background(), lifecycle.BarrierTimeout)
		err := systemd.Barrier(ctx)
		cancel()
		if err != nil {
			s.post(lifecycle.SuccessorInfo{Err: err})
			return
		}
		ctx, cancel = context.WithTimeout(context.Background(), lifecycle.SuccessorTimeout)
		defer cancel()
		st, err := control.Client{Path: path}.Stats(ctx)
		info := lifecycle.SuccessorInfo{Err: err}
		if err == nil {
			info.PID, info.Generation, info.Workers = st.PID, st.Generation, st.Workers
		}
		s.post(info)
	})
}

// TakeOver makes this baton, started by a self-upgrade, the one in
// charge: the parent learns it may hand over, systemd learns the new
// main pid, and this one takes on the control socket and the fd store.
func (s *supervisor) TakeOver(status string, cfg *config.Config) {
	if err := s.upg.Ready(); err != nil {
		// The parent is gone: this one is all there is.
		s.log.Warn("cannot tell the previous baton to hand over", "err", err)
	}
	s.parent = 0
	s.groups.Parent = false
	state := fmt.Sprintf("MAINPID=%d\nREADY=1\nSTATUS=%s", os.Getpid(), status)
	s.goTask(func() {
		err := s.toSystemd(state)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), lifecycle.BarrierTimeout)
			err = systemd.Barrier(ctx)
			cancel()
		}
		if err != nil {
			s.log.Warn("systemd did not confirm the new main pid", "err", err)
		}
	})
	s.serveControl()
	s.serveMetrics()
	// Drop before storing: FDSTOREREMOVE= drops every socket of a name.
	for _, name := range s.unstore {
		if err := systemd.RemoveStoredFD(name); err != nil {
			s.log.Warn("cannot remove socket from systemd's fd store", "name", name, "err", err)
		}
	}
	s.unstore = nil
	s.storeListeners(cfg)
}

// upgradeNote is what a supervisor tells its successor besides the
// descriptors themselves.
type upgradeNote struct {
	Generation int `json:"generation"` // the newest so far; the successor's is the next
	// PID is the passing baton's: the successor's parent, even if that
	// has exited by the time the successor asks for its parent.
	PID        int    `json:"pid,omitempty"`
	Control    string `json:"control"`     // control socket path
	ControlKey string `json:"control_key"` // and its name for the upgrader
	// Metrics is the metrics listener's address, MetricsKey its name.
	Metrics    string `json:"metrics,omitempty"`
	MetricsKey string `json:"metrics_key,omitempty"`
	// RuntimeDir is the runtime directory, which the successor keeps;
	// OwnsRuntimeDir: a baton made it, and the last one removes it.
	RuntimeDir     string           `json:"runtime_dir,omitempty"`
	OwnsRuntimeDir bool             `json:"owns_runtime_dir,omitempty"`
	Listeners      []passedListener `json:"listeners"`
	// Balance is the balancing mode in force, which a self-upgrade
	// cannot change: worker.balance, or what auto chose.
	Balance string `json:"balance,omitempty"`
	// Scaled is the count `baton scale` set, which the successor keeps
	// while its worker.count is ScaledFrom, the passing one's; 0 if the
	// pool follows the configuration.
	Scaled     int `json:"scaled,omitempty"`
	ScaledFrom int `json:"scaled_from,omitempty"`
}

// balance is the mode the passing baton balances with (one older than
// worker.balance sent none: it shared).
func (n *upgradeNote) balance() string { return cmp.Or(n.Balance, config.BalanceShared) }

// passedListener describes one listening socket handed over, under Key.
type passedListener struct {
	Key     string `json:"key"`
	Name    string `json:"name"`
	Network string `json:"network,omitempty"` // empty for a socket from a .socket unit
	Addr    string `json:"addr,omitempty"`
	Systemd bool   `json:"systemd,omitempty"` // from a .socket unit
	Stored  bool   `json:"stored,omitempty"`  // in systemd's fd store
	// Index, when above 0, says this is the socket at that index of the
	// listener's SO_REUSEPORT group (worker.balance = "reuseport"); the
	// listener itself is at 0. Busy: a worker of the passing baton holds
	// it, so the successor's workers take others.
	Index int  `json:"index,omitempty"`
	Busy  bool `json:"busy,omitempty"`
	// Deal, on the listener itself, names the descriptors of the group's
	// dealer (its program and maps, which the successor goes on with);
	// DealKey is each socket's key in it.
	Deal    string `json:"deal,omitempty"`
	DealKey uint32 `json:"deal_key,omitempty"`
}

// UpgradeBackstop is the upgrader's own limit on a successor that never
// gets ready. The Machine's upgrade deadline, from the configuration in
// force, ends it long before.
const UpgradeBackstop = time.Hour

func (s *supervisor) upgradeNote(lastGen int, balance string) upgradeNote {
	n := upgradeNote{Generation: lastGen, PID: os.Getpid(), Control: s.control.path, ControlKey: s.control.passKey,
		RuntimeDir: s.dir.path, OwnsRuntimeDir: s.dir.created, Balance: balance}
	if m := s.metrics; m != nil {
		n.Metrics, n.MetricsKey = m.addr, m.passKey
	}
	for _, l := range s.listeners {
		if l.passKey == "" {
			continue // could not be registered (logged then)
		}
		p := passedListener{Key: l.passKey, Name: l.name, Network: l.network, Addr: l.addr, Systemd: l.inherited, Stored: l.stored}
		if g := l.group; g != nil {
			p.Busy = g.Socks[0].Held()
			if g.Deal != nil {
				p.Deal, p.DealKey = g.DealPass, g.Socks[0].Key
			}
		}
		n.Listeners = append(n.Listeners, p)
		for i, gs := range l.extra() {
			p.Key, p.Index, p.Busy, p.Stored, p.Deal, p.DealKey = gs.PassKey, i+1, gs.Held(), false, "", gs.Key
			n.Listeners = append(n.Listeners, p)
		}
	}
	return n
}

// passListeners registers with the upgrader every listener not yet
// registered (with fromSystemd, only the sockets of a .socket unit), so
// that a self-upgrade passes it on. A registration cannot be taken back,
// so self-bound listeners are registered only when an upgrade starts: one
// added and removed by reloads in between never lingers in the upgrader.
func (s *supervisor) passListeners(fromSystemd bool) error {
	if s.upg == nil {
		return nil
	}
	register := func(name string, fd int, passKey *string) error {
		if *passKey != "" {
			return nil
		}
		s.passSeq++
		key := fmt.Sprintf("listener-%d-%d", os.Getpid(), s.passSeq)
		if err := s.upg.Add(key, fd); err != nil {
			return fmt.Errorf("supervisor: listener %q: %w", name, err)
		}
		*passKey = key
		return nil
	}
	for _, l := range s.listeners {
		if fromSystemd && !l.inherited {
			continue
		}
		if err := register(l.name, l.fd, &l.passKey); err != nil {
			return err
		}
		if fromSystemd {
			continue // group sockets are registered when an upgrade starts
		}
		for _, gs := range l.extra() {
			if err := register(l.name, gs.FD, &gs.PassKey); err != nil {
				return err
			}
		}
		if g := l.group; g == nil || g.DealPass != "" {
			continue
		}
		if fds, ok := l.group.DealerFds(); ok {
			s.passSeq++
			prefix := fmt.Sprintf("deal-%d-%d", os.Getpid(), s.passSeq)
			for name, fd := range dealFds(&fds) {
				if err := s.upg.Add(prefix+"-"+name, *fd); err != nil {
					return fmt.Errorf("supervisor: listener %q: %w", l.name, err)
				}
			}
			l.group.DealPass = prefix
		}
	}
	return nil
}

// passedSocket is a listening socket of baton's own that a self-upgrade
// passes to the successor (the control socket, the metrics listener).
type passedSocket struct {
	what   string // in errors: "control socket"
	at     string // where it listens
	passed string // the key of the parent's socket at the same place, "" if none
	prefix string // of its own key with the upgrader
	// listen opens a new one; unlisten closes that one again when it
	// cannot be registered.
	listen   func() (net.Listener, error)
	unlisten func(net.Listener)
}

// openPassed returns the socket the parent baton passed at the same
// place, else a new one, registered with the upgrader; and its key with
// the upgrader, "" if there is none. One passed but not taken (it was
// elsewhere) is closed by the upgrader when this baton is Ready.
func (s *supervisor) openPassed(p passedSocket) (net.Listener, string, error) {
	if p.passed != "" {
		fd, err := s.upg.Take(p.passed)
		if err == nil && fd < 0 {
			err = errors.New("the previous baton did not pass it")
		}
		if err != nil {
			return nil, "", fmt.Errorf("supervisor: %s: %w", p.what, err)
		}
		f := os.NewFile(uintptr(fd), p.at)
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, "", fmt.Errorf("supervisor: %s from the previous baton: %w", p.what, err)
		}
		return ln, p.passed, nil // the upgrader holds it already
	}
	ln, err := p.listen()
	if err != nil {
		return nil, "", err
	}
	if s.upg == nil {
		return ln, "", nil
	}
	// A key of its own: the upgrader would leak a passed copy that a new
	// registration under its key replaced.
	key := p.prefix + "-" + strconv.Itoa(os.Getpid())
	fd, err := spawn.DupFd(ln.(syscall.Conn))
	if err == nil {
		err = s.upg.Add(key, fd)
		unix.Close(fd)
	}
	if err != nil {
		p.unlisten(ln)
		return nil, "", fmt.Errorf("supervisor: %s: %w", p.what, err)
	}
	return ln, key, nil
}

// takeFromParent takes, in a supervisor started by a self-upgrade, the
// sockets its parent passed that cfg uses: a .socket unit's by name (one
// cfg does not claim is an error, as at start), the others by address.
// The rest are closed when this supervisor is Ready.
func (s *supervisor) takeFromParent(cfg *config.Config) (*upgradeNote, error) {
	var note upgradeNote
	if err := json.Unmarshal([]byte(s.upg.Note()), &note); err != nil {
		return nil, fmt.Errorf("supervisor: self-upgrade: the previous baton's note: %w", err)
	}
	s.parent = cmp.Or(note.PID, os.Getppid())
	s.groups.Parent = true
	if was := note.balance(); cfg.Worker.Balance != config.BalanceAuto && cfg.Worker.Balance != was {
		return nil, fmt.Errorf("supervisor: self-upgrade: worker.balance is %q, but the running baton balances with %q: a self-upgrade cannot change the mode; restart baton instead", cfg.Worker.Balance, was)
	}
	s.chooseBalance(cfg, &note) // before the groups are taken
	take := func(p passedListener) (int, error) {
		fd, err := s.upg.Take(p.Key)
		if err == nil && fd < 0 {
			err = fmt.Errorf("supervisor: self-upgrade: the previous baton did not pass listener %q", p.Name)
		}
		return fd, err
	}
	var fromSystemd []systemd.Socket
	var keys []string
	var extra []passedListener
	for _, p := range note.Listeners {
		if p.Index > 0 {
			extra = append(extra, p)
			continue
		}
		if p.Systemd {
			fd, err := take(p)
			if err != nil {
				closeSockets(fromSystemd)
				return nil, err
			}
			fromSystemd = append(fromSystemd, systemd.Socket{Name: p.Name, Fd: fd})
			keys = append(keys, p.Key)
			continue
		}
		c, ok := listenerAt(cfg, p)
		if p.Stored && (!ok || c.Name != p.Name) {
			// Gone, or renamed: stored again under its new name.
			s.unstore = append(s.unstore, p.Name)
		}
		if !ok {
			continue
		}
		fd, err := take(p)
		if err != nil {
			closeSockets(fromSystemd)
			return nil, err
		}
		l := &listener{name: c.Name, network: p.Network, addr: p.Addr, fd: fd, stored: p.Stored && c.Name == p.Name, passKey: p.Key}
		if p.Network == "unix" {
			l.unlink = p.Addr
		}
		s.listeners = append(s.listeners, l)
	}
	ls, err := adoptInherited(cfg.Listen, fromSystemd, s.log)
	if err != nil {
		return nil, err
	}
	for i, l := range ls {
		l.passKey = keys[i]
	}
	s.listeners = append(s.listeners, ls...)
	if err := s.takeGroups(note.Listeners, extra); err != nil {
		return nil, err
	}
	s.log.Info("taking over from the previous baton", "parent", s.parent, "listeners", len(s.listeners))
	return &note, nil
}

// takeGroups rebuilds the SO_REUSEPORT groups (reuseport) of the
// listeners taken, in the parent's order, from the listeners themselves
// and the extra sockets of all; the sockets the parent's workers hold are
// theirs until it exits.
func (s *supervisor) takeGroups(all, extra []passedListener) error {
	same := func(l *listener, p passedListener) bool {
		return l.inherited == p.Systemd && (l.inherited && l.name == p.Name || !l.inherited && l.network == p.Network && l.addr == p.Addr)
	}
	for _, l := range s.listeners {
		var socks []*steer.Socket
		dealPass := ""
		for _, p := range all {
			if p.Index == 0 && p.Key == l.passKey {
				socks = []*steer.Socket{{FD: l.fd, Key: p.DealKey, Theirs: p.Busy}}
				dealPass = p.Deal
			}
		}
		for _, p := range extra {
			if !same(l, p) {
				continue
			}
			fd, err := s.upg.Take(p.Key)
			if err == nil && fd < 0 {
				err = fmt.Errorf("the previous baton did not pass it")
			}
			if err != nil {
				return fmt.Errorf("supervisor: self-upgrade: listener %q: socket %d of its SO_REUSEPORT group: %w", l.name, p.Index, err)
			}
			socks = append(socks, &steer.Socket{FD: fd, Key: p.DealKey, PassKey: p.Key, Theirs: p.Busy})
			if p.Index != len(socks)-1 {
				unix.Close(fd)
				return fmt.Errorf("supervisor: self-upgrade: listener %q: the previous baton passed socket %d of its SO_REUSEPORT group as number %d", l.name, p.Index, len(socks)-1)
			}
		}
		if len(socks) > 1 || len(socks) == 1 && (socks[0].Theirs || dealPass != "") {
			g := &steer.Group{Name: l.name, Socks: socks}
			if dealPass != "" {
				s.adoptDealer(g, dealPass)
			} else {
				g.Seat(dealInTurn, false)
			}
			l.group = g
			s.groups.Add(g)
		}
	}
	if s.balance == config.BalanceReusePort {
		s.watchParent(s.parent)
	}
	return nil
}

// adoptDealer goes on with the dealer the parent passed under prefix, or
// falls back to the classic program, saying why.
func (s *supervisor) adoptDealer(g *steer.Group, prefix string) {
	var fds deal.Fds
	var err error
	for name, fd := range dealFds(&fds) {
		*fd = -1
		if err == nil {
			if *fd, err = s.upg.Take(prefix + "-" + name); err == nil && *fd < 0 {
				err = fmt.Errorf("the previous baton did not pass its %s", name)
			}
		}
	}
	if err == nil {
		var d *deal.Dealer
		if d, err = deal.Adopt(fds); err == nil {
			g.Deal, g.DealPass = d, prefix // the upgrader passes its copies on
			return
		}
	}
	for _, fd := range dealFds(&fds) {
		if *fd >= 0 {
			unix.Close(*fd)
		}
	}
	g.Random = "self-upgrade: " + err.Error()
}

// dealFds names the dealer's descriptors under the group's DealPass.
func dealFds(fds *deal.Fds) map[string]*int {
	return map[string]*int{"prog": &fds.Prog, "state": &fds.State, "turns": &fds.Turns, "socks": &fds.Socks}
}

// listenerAt returns cfg's listener where p is bound, if any.
func listenerAt(cfg *config.Config, p passedListener) (config.Listener, bool) {
	for _, c := range cfg.Listen {
		if c.Network == p.Network && c.Addr == p.Addr {
			return c, true
		}
	}
	return config.Listener{}, false
}

func closeSockets(ss []systemd.Socket) {
	for _, s := range ss {
		unix.Close(s.Fd)
	}
}
