package supervisor

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/excerpt"
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
// with a control socket controlSocketOf finds. The error says which of
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
	control, err := controlSocketOf(pid)
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

// checkOwner reports an error unless uid opened the control socket conn
// is connected to (the peer credentials the kernel recorded when it
// started listening): a socket found by looking around is only trusted if
// it is the caller's own.
func checkOwner(conn *net.UnixConn, path string, uid int) error {
	owner, err := peerUID(conn)
	if err != nil {
		return fmt.Errorf("supervisor: control socket %s: %w", path, err)
	}
	if owner != uid {
		return fmt.Errorf("supervisor: control socket %s is uid %d's, not yours (uid %d)", path, owner, uid)
	}
	return nil
}
