package control

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/excerpt"
	"github.com/batonhq/baton/internal/unixsock"
)

// Instance is a running baton of the caller's user.
type Instance struct {
	PID     int
	Control string // its control socket's path
	// Config is the file its --config named, as a path this process can
	// open (through /proc/PID/cwd when it is relative); "" without one.
	Config string
}

// Running lists the batons of user uid that answer on a control socket,
// by pid: the processes InstanceOf accepts. During a self-upgrade the old
// and the new baton share one control socket: it is listed once, under
// the lower pid.
func Running(uid int) []Instance {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	var out []Instance
	for _, pid := range pids {
		b, err := InstanceOf(pid, uid)
		if err != nil || slices.ContainsFunc(out, func(i Instance) bool { return i.Control == b.Control }) {
			continue
		}
		out = append(out, b)
	}
	return out
}

// InstanceOf returns the baton with that pid if it is one of uid's: a
// process whose real, effective, saved and filesystem uids are all uid (a
// set-user-ID program another user started is not uid's), running `baton
// run` (whatever the executable is called: its second argument is "run"),
// with a control socket ControlSocketOf finds. The error says which of
// these it is not.
func InstanceOf(pid, uid int) (Instance, error) {
	proc := "/proc/" + strconv.Itoa(pid)
	uids, err := procUIDs(proc)
	if err != nil {
		return Instance{}, fmt.Errorf("no process with pid %d", pid)
	}
	for _, id := range uids {
		if id != strconv.Itoa(uid) {
			return Instance{}, fmt.Errorf("pid %d runs as uids %s, not yours (uid %d)", pid, strings.Join(uids, " "), uid)
		}
	}
	b, err := os.ReadFile(proc + "/cmdline")
	if err != nil {
		return Instance{}, fmt.Errorf("no process with pid %d", pid)
	}
	argv := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
	if len(argv) < 2 || argv[1] != "run" {
		return Instance{}, fmt.Errorf("pid %d is not a baton: it runs %s, not \"baton run\"", pid, excerpt.Quote(filepath.Base(argv[0])))
	}
	control, err := ControlSocketOf(pid)
	if err != nil {
		return Instance{}, err
	}
	return Instance{PID: pid, Control: control, Config: openablePath(proc, config.FileOf(argv[2:]))}, nil
}

// procUIDs returns the process's real, effective, saved and filesystem
// uids.
func procUIDs(proc string) ([]string, error) {
	b, err := os.ReadFile(proc + "/status")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) == 4 {
				return f, nil
			}
		}
	}
	return nil, fmt.Errorf("%s/status: no Uid line", proc)
}

// openablePath returns a path the process of /proc/PID named, as this
// process can open it: a relative one from that process's working
// directory, an absolute one from its root when that is not this one's (a
// container).
func openablePath(proc, path string) string {
	switch {
	case path == "":
		return ""
	case !filepath.IsAbs(path):
		return proc + "/cwd/" + path // not Join: "../a.toml" is above its directory
	}
	root, err1 := os.Stat(proc + "/root")
	mine, err2 := os.Stat("/")
	if err1 == nil && err2 == nil && !os.SameFile(root, mine) {
		return proc + "/root" + path
	}
	return path
}

// SystemdRuntimeDir returns the runtime directory systemd made for the
// service (RuntimeDirectory=), "" if none: the first of RUNTIME_DIRECTORY,
// which may list several separated by ':'.
func SystemdRuntimeDir() string {
	dir, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":")
	return dir
}

// ServiceSocket returns where the baton of systemd service name listens
// for commands: SocketName in the service's RuntimeDirectory=name under
// runRoot, /run for a system service and $XDG_RUNTIME_DIR for a user's
// (systemctl --user). baton puts it there by default
// ($RUNTIME_DIRECTORY/baton.sock), and the config `baton unit` writes
// names it.
func ServiceSocket(runRoot, name string) string {
	return filepath.Join(runRoot, name, SocketName)
}

// ServiceRunRoots returns where systemd makes a service's
// RuntimeDirectory=: /run, then $XDG_RUNTIME_DIR when it is set.
func ServiceRunRoots() []string {
	roots := []string{"/run"}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" && dir != "/run" {
		roots = append(roots, dir)
	}
	return roots
}

// ControlSocketOf returns the control socket of the baton with that pid,
// found through the process itself: the listening unix socket named
// SocketName among those it holds (/proc/PID/fd, /proc/PID/net/unix).
// Only its own user and root may look.
func ControlSocketOf(pid int) (string, error) {
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
		if len(f) < 8 || !held[f[6]] || filepath.Base(f[7]) != SocketName {
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
		return "", fmt.Errorf("pid %d holds no control socket named %s (give --control PATH)", pid, SocketName)
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

// CheckOwner reports an error unless uid opened the control socket conn
// is connected to (the peer credentials the kernel recorded when it
// started listening): a socket found by looking around is only trusted if
// it is the caller's own.
func CheckOwner(conn *net.UnixConn, path string, uid int) error {
	owner, err := peerUID(conn)
	if err != nil {
		return fmt.Errorf("supervisor: control socket %s: %w", path, err)
	}
	if owner != uid {
		return fmt.Errorf("supervisor: control socket %s is uid %d's, not yours (uid %d)", path, owner, uid)
	}
	return nil
}

// peerUID returns the uid of the process at the other end, as the kernel
// recorded it when it connected (SO_PEERCRED).
func peerUID(conn *net.UnixConn) (int, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if serr != nil {
		return -1, os.NewSyscallError("getsockopt SO_PEERCRED", serr)
	}
	return int(cred.Uid), nil
}
