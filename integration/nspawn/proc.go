package nspawn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStat is what this package needs from /proc/<pid>/stat.
type procStat struct {
	comm  string
	state byte
	ppid  int
	pgrp  int
	start uint64 // clock ticks after boot; with the pid, identifies a process
}

// readStat reads /proc/<pid>/stat. The error wraps fs.ErrNotExist when the
// process is gone (and reaped).
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(string(b))
}

// parseStat parses a /proc/<pid>/stat line. comm may hold spaces and
// parentheses, so it ends at the last ')'.
func parseStat(s string) (procStat, error) {
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return procStat{}, fmt.Errorf("nspawn: parse /proc stat %q: no comm", s)
	}
	// Fields after comm: state(3) ppid(4) pgrp(5) ... starttime(22).
	f := strings.Fields(s[closing+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("nspawn: parse /proc stat %q: too few fields", s)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("nspawn: parse /proc stat ppid: %w", err)
	}
	pgrp, err := strconv.Atoi(f[2])
	if err != nil {
		return procStat{}, fmt.Errorf("nspawn: parse /proc stat pgrp: %w", err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("nspawn: parse /proc stat starttime: %w", err)
	}
	return procStat{comm: s[open+1 : closing], state: f[0][0], ppid: ppid, pgrp: pgrp, start: start}, nil
}

// children returns the pids whose parent is ppid.
func children(ppid int) ([]int, error) {
	return scan(func(st procStat) bool { return st.ppid == ppid })
}

// groupMembers returns the processes of process group pgrp.
func groupMembers(pgrp int) ([]proc, error) {
	var ps []proc
	_, err := scan(func(st procStat) bool {
		return st.pgrp == pgrp
	}, func(pid int, st procStat) { ps = append(ps, proc{pid: pid, start: st.start}) })
	return ps, err
}

// scan returns the pids of the processes that match, and passes each to
// the optional visit functions.
func scan(match func(procStat) bool, visit ...func(int, procStat)) ([]int, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue // gone meanwhile
		}
		if match(st) {
			pids = append(pids, pid)
			for _, v := range visit {
				v(pid, st)
			}
		}
	}
	return pids, nil
}

// proc is one process, identified by its pid and start time so that a
// recycled pid is never mistaken for it.
type proc struct {
	pid   int
	start uint64
}

// alive reports whether p still runs (a zombie counts as gone: it runs no
// code and holds no port, and only its parent can reap it).
func (p proc) alive() bool {
	if p.pid <= 0 {
		return false
	}
	st, err := readStat(p.pid)
	return err == nil && st.start == p.start && st.state != 'Z'
}

// kill sends sig to p if p is still the same process. It never signals pid 0
// or a negative pid (a process group).
func (p proc) kill(sig syscall.Signal) error {
	if !p.alive() {
		return nil
	}
	if err := syscall.Kill(p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return os.NewSyscallError("kill", err)
	}
	return nil
}

// waitGone polls until p is gone or d has passed.
func (p proc) waitGone(d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for p.alive() {
		if sleepCtx(ctx, pollInterval) != nil {
			return !p.alive()
		}
	}
	return true
}

// sleepCtx waits for d or until ctx is done, whichever comes first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct {
	point     string
	fstype    string
	superOpts string
}

// mounts parses /proc/self/mountinfo.
func mounts() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root point opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		ms = append(ms, mountInfo{point: unescapeMount(pf[4]), fstype: qf[0], superOpts: qf[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return ms, nil
}

// unescapeMount undoes the octal escapes (\040 for a space, ...) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
