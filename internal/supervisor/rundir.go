package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/batonhq/baton/internal/unixsock"
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
// `baton reload --pid PID` finds it through the process (controlSocketOf).
func openRuntimeDir(dir string, log *slog.Logger) (runtimeDir, error) {
	if dir == "" {
		dir = SystemdRuntimeDir()
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

// SystemdRuntimeDir returns the runtime directory systemd made for the
// service (RuntimeDirectory=), "" if none: the first of RUNTIME_DIRECTORY,
// which may list several separated by ':'.
func SystemdRuntimeDir() string {
	dir, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":")
	return dir
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

// controlSocketOf returns the control socket of the baton with that pid,
// found through the process itself: the listening unix socket named
// ControlSocketName among those it holds (/proc/PID/fd, /proc/PID/net/unix).
// Only its own user and root may look.
func controlSocketOf(pid int) (string, error) {
	proc := "/proc/" + strconv.Itoa(pid)
	if _, err := os.Stat(proc); err != nil {
		return "", fmt.Errorf("no process with pid %d", pid)
	}
	held, err := socketInodes(proc)
	if err != nil {
		return "", fmt.Errorf("cannot see the sockets of pid %d (run as its user or as root): %w", pid, err)
	}
	b, err := os.ReadFile(proc + "/net/unix")
	if err != nil {
		return "", fmt.Errorf("cannot list the unix sockets of pid %d: %w", pid, err)
	}
	var found []string
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// Num RefCount Protocol Flags Type St Inode Path
		f := strings.Fields(line)
		const acceptCon, stream = 0x10000, 1
		if len(f) < 8 || !held[f[6]] || filepath.Base(f[7]) != ControlSocketName {
			continue
		}
		flags, _ := strconv.ParseUint(f[3], 16, 32)
		typ, _ := strconv.ParseUint(f[4], 16, 16)
		if flags&acceptCon == 0 || typ != stream || slices.Contains(found, f[7]) {
			continue
		}
		found = append(found, f[7])
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("pid %d holds no control socket named %s (give --control PATH)", pid, ControlSocketName)
	case 1:
		path := found[0]
		// A baton in another mount namespace (a container): its path is
		// under its root.
		if _, err := os.Stat(path); err != nil {
			if alt := proc + "/root" + path; len(alt) <= unixsock.MaxPath {
				path = alt
			}
		}
		return path, nil
	}
	return "", fmt.Errorf("pid %d holds several control sockets (%s): give --control PATH", pid, strings.Join(found, ", "))
}

// socketInodes returns the inodes of the sockets a process holds.
func socketInodes(proc string) (map[string]bool, error) {
	ents, err := os.ReadDir(proc + "/fd")
	if err != nil {
		return nil, err
	}
	held := map[string]bool{}
	for _, e := range ents {
		link, err := os.Readlink(proc + "/fd/" + e.Name())
		if ino, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			held[strings.TrimSuffix(ino, "]")] = true
		}
	}
	return held, nil
}
