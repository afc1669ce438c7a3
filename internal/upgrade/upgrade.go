package upgrade

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudflare/tableflip"
	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/spawn"
)

// The parent's note and the report file, where the successor writes its
// pid at once and, if it gives up, why. Both are set only for the duration
// of Upgrade, and the successor removes them from its environment.
const (
	noteEnv   = "BATON_UPGRADE_NOTE"
	reportEnv = "BATON_UPGRADE_REPORT"
)

// maxReport bounds what is read back from the report file.
const maxReport = 4096

// Upgrader hands a supervisor's descriptors to its successor: a new
// process of the executable at os.Args[0] (possibly a new version), started
// with the same arguments and environment, as github.com/cloudflare/tableflip
// does it. Every descriptor registered with Add passes to each successor
// under its name; the successor takes the ones it wants with Take.
//
// Descriptors are kept and passed as they are: nothing here changes their
// blocking mode, which every process holding a socket shares.
type Upgrader struct {
	tf     *tableflip.Upgrader
	note   string
	report string      // the parent's report file (successor side)
	ready  atomic.Bool // Ready was called
	// notReady is tableflip's answer to an Upgrade before Ready, asked
	// once at the start: tableflip exports no sentinel for it, and the
	// same value comes back each time.
	notReady error
	// parentGone is set once the supervisor this one took over from has
	// exited (at once without one): until then tableflip refuses to
	// upgrade.
	parentGone atomic.Bool

	mu      sync.Mutex
	pending string // the report file of the Upgrade under way (parent side)
}

// NewUpgrader must be called at most once per process, before anything
// else uses descriptors 3 and up of a process started by Upgrade. timeout
// bounds how long Upgrade waits for the successor's Ready before killing
// it; Signal lets the caller end a successor sooner, and more gently.
func NewUpgrader(timeout time.Duration) (*Upgrader, error) {
	tf, err := tableflip.New(tableflip.Options{UpgradeTimeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("upgrade: upgrader: %w", err)
	}
	u := &Upgrader{tf: tf}
	// Before Ready, tableflip answers every Upgrade with its "not ready"
	// error and starts nothing.
	u.notReady = tf.Upgrade()
	if !tf.HasParent() {
		u.parentGone.Store(true)
	} else {
		go func() {
			// Ends when the parent has exited (tableflip sees its end of
			// a pipe close), or never: then nothing may upgrade anyway.
			tf.WaitForParent(context.Background())
			u.parentGone.Store(true)
		}()
		// tableflip's pipes to the parent: no worker of ours may inherit
		// them (it marks only the passed descriptors close-on-exec).
		unix.CloseOnExec(3)
		unix.CloseOnExec(4)
		u.note, u.report = os.Getenv(noteEnv), os.Getenv(reportEnv)
		u.writeReport(os.O_TRUNC, strconv.Itoa(os.Getpid())+"\n")
	}
	os.Unsetenv(noteEnv)
	os.Unsetenv(reportEnv)
	return u, nil
}

// HasParent reports whether this process was started by Upgrade, as the
// successor of a running supervisor.
func (u *Upgrader) HasParent() bool { return u.tf.HasParent() }

// Note returns what the parent passed to Upgrade ("" without a parent).
func (u *Upgrader) Note() string { return u.note }

// Add registers a duplicate of fd under name, to pass to every successor.
// fd itself stays the caller's. A name is registered once: there is no way
// to take it back.
func (u *Upgrader) Add(name string, fd int) error {
	// AddFile wants an *os.File, and dups it again through SyscallConn.
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return fmt.Errorf("upgrade: pass %q to the next supervisor: %w", name, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err))
	}
	f := os.NewFile(uintptr(dup), name)
	defer f.Close()
	if err := u.tf.AddFile(name, f); err != nil {
		return fmt.Errorf("upgrade: pass %q to the next supervisor: %w", name, err)
	}
	return nil
}

// Take returns a close-on-exec duplicate of the descriptor the parent
// passed under name, or -1 when it passed none. The upgrader keeps its own
// copy, passed on to this process's successor in turn.
func (u *Upgrader) Take(name string) (int, error) {
	f, err := u.tf.File(name)
	if err != nil {
		return -1, fmt.Errorf("upgrade: take %q from the previous supervisor: %w", name, err)
	}
	if f == nil {
		return -1, nil
	}
	defer f.Close()
	fd, err := spawn.DupFd(f)
	if err != nil {
		return -1, fmt.Errorf("upgrade: take %q from the previous supervisor: %w", name, err)
	}
	return fd, nil
}

// Ready tells the parent, if any, that this process has taken over: its
// Upgrade returns nil. Descriptors passed but not taken are closed. A
// process must be Ready before it can Upgrade itself.
func (u *Upgrader) Ready() error {
	if err := u.tf.Ready(); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	u.ready.Store(true)
	return nil
}

// Fail tells the parent, whose Upgrade is waiting, why this process is
// giving up before it was Ready. It does nothing without a parent or once
// Ready was called.
func (u *Upgrader) Fail(reason error) {
	if !u.ready.Load() {
		u.writeReport(os.O_APPEND, reason.Error())
	}
}

func (u *Upgrader) writeReport(flag int, s string) {
	if u.report == "" {
		return
	}
	f, err := os.OpenFile(u.report, os.O_WRONLY|flag, 0)
	if err != nil {
		return // the parent gave up waiting and removed it
	}
	defer f.Close()
	f.WriteString(s)
}

// ErrParentRunning is returned by Upgrade while the supervisor this one
// took over from has not exited yet.
var ErrParentRunning = errors.New("upgrade: the previous supervisor has not exited yet")

// Upgrade starts the successor with note and every registered descriptor,
// and waits until it is Ready (nil), exits or runs out of time (an error;
// the successor is killed). It returns the successor's pid when known,
// and an error carries the successor's own reason when it gave one with
// Fail. Only one Upgrade runs at a time.
func (u *Upgrader) Upgrade(note string) (int, error) {
	if !u.parentGone.Load() {
		return 0, ErrParentRunning
	}
	report, err := os.CreateTemp("", "baton-upgrade-*")
	if err != nil {
		return 0, fmt.Errorf("upgrade: %w", err)
	}
	report.Close()
	u.mu.Lock()
	u.pending = report.Name()
	os.Setenv(noteEnv, note)
	os.Setenv(reportEnv, report.Name())
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.pending = ""
		os.Unsetenv(noteEnv)
		os.Unsetenv(reportEnv)
		os.Remove(report.Name())
		u.mu.Unlock()
	}()
	err = u.tf.Upgrade()
	// tableflip's loop may not have seen Ready yet when Upgrade follows it
	// closely: then it answers "not ready" although it is.
	for wait := time.Millisecond; errors.Is(err, u.notReady) && u.ready.Load() && wait < time.Second; wait *= 2 {
		time.Sleep(wait)
		err = u.tf.Upgrade()
	}
	pid, why := readReport(report.Name())
	if err == nil {
		return pid, nil
	}
	// tableflip never closes its copies of the two pipe ends it gave the
	// failed successor: they are unreachable *os.Files, closed only by
	// their cleanups, which a collection runs. Closing their numbers here
	// instead would close whatever reuses them when the cleanups run.
	runtime.GC()
	if why != "" {
		return pid, fmt.Errorf("upgrade: %w", errors.New(why))
	}
	// tableflip says which process ended how ("child pid=N exited: exit
	// status 1"): the supervisor's reaper leaves that process to it.
	return pid, fmt.Errorf("upgrade: %w", err)
}

// Signal sends sig to the successor of the Upgrade under way, once it has
// started (it returns false before, or without an Upgrade).
func (u *Upgrader) Signal(sig unix.Signal) bool {
	u.mu.Lock()
	path := u.pending
	u.mu.Unlock()
	if path == "" {
		return false
	}
	pid, _ := readReport(path)
	return pid > 0 && unix.Kill(pid, sig) == nil
}

// Stop aborts an Upgrade under way (killing the successor) and refuses
// later ones. Call it when the supervisor stops for good.
func (u *Upgrader) Stop() { u.tf.Stop() }

// readReport returns the successor's pid (first line) and reason (the
// rest), as far as it wrote them.
func readReport(path string) (int, string) {
	f, err := os.Open(path)
	if err != nil {
		return 0, ""
	}
	defer f.Close()
	b := make([]byte, maxReport)
	n, _ := io.ReadFull(f, b)
	line, why, ok := strings.Cut(string(b[:n]), "\n")
	if !ok {
		return 0, "" // the pid is still being written
	}
	pid, _ := strconv.Atoi(line)
	return pid, why
}
