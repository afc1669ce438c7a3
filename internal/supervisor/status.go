package supervisor

import (
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Status is what `baton status` shows: baton itself, then each worker.
// Its JSON is documented in docs/control.md.
type Status struct {
	At         time.Time `json:"at"` // when it was read
	PID        int       `json:"pid"`
	Version    string    `json:"version"`
	Started    time.Time `json:"started"`
	Phase      string    `json:"phase"`
	Ready      bool      `json:"ready"`
	StopIn     float64   `json:"stop_in_seconds"` // phase "lame duck": seconds until the drain, else 0
	Generation int       `json:"generation"`
	Balance    string    `json:"balance"` // the mode in force
	// BalanceAuto is why worker.balance = "auto" chose Balance; empty
	// when the configuration named the mode.
	BalanceAuto string           `json:"balance_auto,omitempty"`
	Listeners   []StatusListener `json:"listeners"`
	Budget      StatusBudget     `json:"restart_budget"`
	LastReload  *StatusReload    `json:"last_reload,omitempty"`
	Workers     []StatusWorker   `json:"workers"`
}

// StatusListener is a socket the workers serve on.
type StatusListener struct {
	Name    string `json:"name"`
	Address string `json:"address"` // where it is bound, as a listen URL
}

// StatusBudget is the restart budget: Used restarts within the window,
// of Limit.
type StatusBudget struct {
	Used          int     `json:"used"`
	Limit         int     `json:"limit"`
	WindowSeconds float64 `json:"window_seconds"`
	Spent         bool    `json:"spent"`
}

// StatusReload is the last reload's outcome.
type StatusReload struct {
	At    time.Time `json:"at"`
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
}

// StatusWorker is one live worker process.
type StatusWorker struct {
	Slot       int       `json:"slot"`
	PID        int       `json:"pid"`
	Generation int       `json:"generation"`
	State      string    `json:"state"` // starting, ready, draining or stopping
	Started    time.Time `json:"started"`
	Restarts   int       `json:"restarts"`    // unplanned restarts of its slot
	CPUSeconds float64   `json:"cpu_seconds"` // user and system time so far
	RSSBytes   int64     `json:"rss_bytes"`
	Status     string    `json:"status,omitempty"` // its last STATUS=
}

// status reads the Machine's snapshot and adds what only the world knows:
// where the sockets are bound, the workers' CPU time and memory.
func (s *supervisor) status() *Status {
	snap := s.m.Snapshot()
	st := &Status{
		At: time.Now(), PID: os.Getpid(), Version: s.version, Started: s.started, Phase: snap.Phase, Ready: snap.Ready, StopIn: snap.StopIn.Seconds(), Generation: snap.Generation, Balance: s.balance, BalanceAuto: s.auto,
		Budget:  StatusBudget{Used: snap.Budget.Used, Limit: snap.Budget.Limit, WindowSeconds: snap.Budget.Window.Seconds(), Spent: snap.Budget.Spent},
		Workers: []StatusWorker{},
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
		st.Listeners = append(st.Listeners, StatusListener{Name: l.Name, Address: addr})
	}
	if at := snap.LastReload.At; !at.IsZero() {
		st.LastReload = &StatusReload{At: at, OK: snap.LastReload.Err == nil}
		if err := snap.LastReload.Err; err != nil {
			st.LastReload.Error = err.Error()
		}
	}
	for _, p := range snap.Procs {
		st.Workers = append(st.Workers, StatusWorker{Slot: p.Slot, PID: p.PID, Generation: p.Generation, State: p.State, Started: p.Started,
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
