package supervisor

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Instance is a running baton that answers on a control socket.
type Instance struct {
	PID     int
	Control string // its control socket's path
}

// Running lists the batons of user uid that answer on a control socket,
// by pid: the processes of uid running `baton run` (whatever the
// executable is called: their second argument is "run") whose control
// socket ControlSocketOf finds. During
// a self-upgrade the old and the new baton share one control socket: it
// is listed once, under the lower pid.
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
		proc := "/proc/" + strconv.Itoa(pid)
		fi, err := os.Stat(proc)
		if err != nil {
			continue // gone meanwhile
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != uid || !allUIDs(proc, uid) {
			continue // a set-user-ID program run by another user is not uid's
		}
		b, err := os.ReadFile(proc + "/cmdline")
		argv := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		if err != nil || len(argv) < 2 || argv[1] != "run" {
			continue
		}
		path, err := ControlSocketOf(pid)
		if err != nil || slices.ContainsFunc(out, func(i Instance) bool { return i.Control == path }) {
			continue
		}
		out = append(out, Instance{PID: pid, Control: path})
	}
	return out
}

// allUIDs reports whether the process's real, effective, saved and
// filesystem uids are all uid.
func allUIDs(proc string, uid int) bool {
	b, err := os.ReadFile(proc + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			for _, id := range f {
				if n, err := strconv.Atoi(id); err != nil || n != uid {
					return false
				}
			}
			return len(f) == 4
		}
	}
	return false
}

// CheckOwner reports an error unless the control socket at path was
// opened by uid (the peer credentials of a connection to it, which the
// kernel records when the socket listens): a socket found by looking
// around is only trusted if it is the caller's own.
func CheckOwner(path string, uid int) error {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return fmt.Errorf("%w on %s: %w", ErrNoAnswer, path, err)
	}
	defer conn.Close()
	owner, err := peerUID(conn.(*net.UnixConn))
	if err != nil {
		return fmt.Errorf("supervisor: control socket %s: %w", path, err)
	}
	if owner != uid {
		return fmt.Errorf("supervisor: control socket %s is uid %d's, not yours (uid %d): name the baton with --control, --config or --pid", path, owner, uid)
	}
	return nil
}
