package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"

	"github.com/batonhq/baton/internal/control"
)

// rootRuntimeBase holds the runtime directories of batons run by root
// without RUNTIME_DIRECTORY. Only root can create it, as /run is root's.
// A variable for tests.
var rootRuntimeBase = "/run/baton"

// runtimeDir is where baton keeps its notify socket and, unless
// control.socket says otherwise, its control socket.
type runtimeDir struct {
	path string
	// created: baton made it, so it removes it when it exits (once the
	// sockets in it are gone: never what someone else put there).
	created bool
}

// openRuntimeDir returns the runtime directory: dir when given (tests),
// else systemd's RUNTIME_DIRECTORY, else a new directory no one else can
// have made or can enter. Its name is not predictable, so a local user
// cannot take it over or keep baton from starting by creating it first,
// and two batons with the same pid (in two containers) never share one.
// `baton reload --pid PID` finds it through the process (control.ControlSocketOf).
func openRuntimeDir(dir string, log *slog.Logger) (runtimeDir, error) {
	if dir == "" {
		dir = control.SystemdRuntimeDir()
	}
	if dir != "" {
		return runtimeDir{path: dir}, nil
	}
	pattern := "baton-" + strconv.Itoa(os.Getpid()) + "-"
	base, err := runtimeBase()
	if err == nil && base != "" {
		// MkdirTemp makes it with mode 0700, under a name that did not
		// exist before.
		var path string
		if path, err = os.MkdirTemp(base, pattern); err == nil {
			return runtimeDir{path: path, created: true}, nil
		}
	}
	if err != nil {
		log.Warn("runtime directory: using the temporary directory instead", "err", err)
	}
	path, err := os.MkdirTemp("", pattern)
	if err != nil {
		return runtimeDir{}, fmt.Errorf("supervisor: runtime directory: %w (set RUNTIME_DIRECTORY or TMPDIR to a directory baton may write)", err)
	}
	return runtimeDir{path: path, created: true}, nil
}

// runtimeBase returns where to make a runtime directory: /run/baton for
// root, $XDG_RUNTIME_DIR for others; "" means the temporary directory. It
// refuses a base that another user could write to.
func runtimeBase() (string, error) {
	if os.Geteuid() == 0 {
		if err := os.Mkdir(rootRuntimeBase, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS) {
				return "", nil // no writable /run here (a container)
			}
			return "", err
		}
		return rootRuntimeBase, checkPrivate(rootRuntimeBase)
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return dir, checkPrivate(dir)
	}
	return "", nil
}

// checkPrivate refuses a directory that is not a real directory of this
// user, or that its group or others may write to.
func checkPrivate(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is not a directory of uid %d that only it may write to", dir, os.Geteuid())
	}
	return nil
}

// remove removes the directory if baton created it and it is empty: the
// sockets baton put there are removed by their own close.
func (d runtimeDir) remove() {
	if d.created {
		os.Remove(d.path)
	}
}
