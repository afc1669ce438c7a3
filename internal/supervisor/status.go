package supervisor

import (
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/control"
)

// Status answers control's status (control.State): the Machine's
// snapshot and what only the world knows: where the sockets are bound,
// the workers' CPU time and memory.
func (s *supervisor) Status() *control.Status {
	snap := s.m.Snapshot()
	st := &control.Status{
		At: time.Now(), PID: os.Getpid(), Version: s.version, Config: s.configFile, Unit: s.unit, Started: s.started, Phase: snap.Phase, Ready: snap.Ready, StopIn: snap.StopIn.Seconds(), Generation: snap.Generation, Balance: s.balance, BalanceAuto: s.auto,
		Budget:        control.StatusBudget{Used: snap.Budget.Used, Limit: snap.Budget.Limit, WindowSeconds: snap.Budget.Window.Seconds(), Spent: snap.Budget.Spent},
		Workers:       []control.StatusWorker{},
		TargetWorkers: snap.Desired, ConfigWorkers: snap.Desired,
	}
	if sc := snap.Scaled; sc.Workers > 0 {
		st.ConfigWorkers = sc.Config
	}
	for _, l := range snap.Listeners {
		addr := l.Address
		for _, c := range s.listeners {
			if c.name == l.Name {
				if a := boundAddress(c.fd); a != "" {
					addr = a
				}
				break
			}
		}
		st.Listeners = append(st.Listeners, control.StatusListener{Name: l.Name, Address: addr})
	}
	if at := snap.LastReload.At; !at.IsZero() {
		st.LastReload = &control.StatusReload{At: at, OK: snap.LastReload.Err == nil}
		if err := snap.LastReload.Err; err != nil {
			st.LastReload.Error = err.Error()
		}
	}
	for _, p := range snap.Procs {
		st.Workers = append(st.Workers, control.StatusWorker{Slot: p.Slot, PID: p.PID, Generation: p.Generation, State: p.State, Started: p.Started,
			Restarts: p.Restarts, CPUSeconds: processCPU(p.PID), RSSBytes: processRSS(p.PID), Status: p.Status})
	}
	return st
}

// boundAddress says where a listening socket is bound, as a listen URL,
// "" if it cannot tell.
func boundAddress(fd int) string {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return ""
	}
	typ, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	scheme := "tcp"
	if typ == unix.SOCK_DGRAM {
		scheme = "udp"
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return scheme + "://" + net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		return scheme + "://" + net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrUnix:
		return "unix://" + a.Name
	}
	return ""
}
