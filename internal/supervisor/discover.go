package supervisor

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != uid {
			continue
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
