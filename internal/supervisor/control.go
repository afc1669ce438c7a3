package supervisor

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/internal/unixsock"
)

// controlServer is the control socket: control.Server answers on it.
type controlServer struct {
	control.Server
	path    string
	ln      *net.UnixListener
	once    sync.Once
	passKey string // its name for the upgrader, "" if not registered
}

// openControl returns the control socket at path: the one the parent
// passed when it is at the same path (a successor answers where its
// predecessor did), else a new one. It is registered with the upgrader.
func (s *supervisor) openControl(path string, note *upgradeNote) (*controlServer, error) {
	p := passedSocket{what: "control socket", at: path, prefix: "control",
		listen: func() (net.Listener, error) { return listenControl(path) },
		unlisten: func(ln net.Listener) {
			ln.Close()
			os.Remove(path)
		},
	}
	if note != nil && note.Control == path {
		p.passed = note.ControlKey
	}
	ln, key, err := s.openPassed(p)
	if err != nil {
		return nil, err
	}
	c := &controlServer{path: path, ln: ln.(*net.UnixListener), passKey: key}
	c.ln.SetUnlinkOnClose(false)
	return c, nil
}

// serveControl starts answering on the control socket.
func (s *supervisor) serveControl() {
	s.goTask(func() { s.control.Serve(s.control.ln, s.quit) })
}

func listenControl(path string) (*net.UnixListener, error) {
	if err := removeStaleSocket(path); err != nil {
		return nil, fmt.Errorf("supervisor: control socket: %w", err)
	}
	// Only the service's own user may reload or stop it: the socket is
	// owner-only from the moment it exists. Its path is removed by close,
	// not by every process holding a copy.
	ln, err := unixsock.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("supervisor: control socket: %w", err)
	}
	return ln, nil
}

// close stops accepting; the socket file is removed unless keepPath
// (another supervisor answers on it).
func (c *controlServer) close(keepPath bool) {
	c.once.Do(func() {
		c.ln.Close()
		if !keepPath {
			os.Remove(c.path)
		}
	})
}

// Stats answers control's stats (control.State).
func (s *supervisor) Stats() *control.Stats {
	snap := s.m.Snapshot()
	st := &control.Stats{
		PID:         os.Getpid(),
		Version:     s.version,
		Goroutines:  runtime.NumGoroutine(),
		Generation:  snap.Generation,
		Workers:     snap.Workers,
		Draining:    snap.Draining,
		Restarts:    snap.Restarts,
		Reloading:   snap.Reloading,
		NotifyDrops: int64(snap.NotifyDrops) + s.fromWorkers.Malformed(),
	}
	st.OutputDrops = s.outputDropped()
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		st.FDs = len(ents)
	}
	st.RSSKB = int(processRSS(os.Getpid()) >> 10)
	if at := s.trimmed.Load(); at != 0 {
		st.Trimmed = time.Unix(0, at)
	}
	st.ControlRefused = s.control.Refused()
	return st
}

// outputDropped counts the output lines dropped, on the way to stderr or
// to journald. Safe outside the loop.
func (s *supervisor) outputDropped() int64 {
	var n int64
	if d, ok := s.out.w.(interface{ Dropped() int64 }); ok {
		n = d.Dropped()
	}
	if s.journal != nil {
		n += s.journal.dropped.Load()
	}
	return n
}
