package cpulimit

import (
	"bufio"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// quota is a cgroup's CPU bandwidth limit: us microseconds of CPU time
// every period microseconds.
type quota struct{ us, period int64 }

var errMalformed = errors.New("cpulimit: malformed cgroup file")

// parseMax parses cgroup v2's cpu.max: "max 100000" (no limit, ok false)
// or "150000 100000".
func parseMax(b string) (q quota, ok bool, err error) {
	f := strings.Fields(b)
	if len(f) != 2 {
		return quota{}, false, errMalformed
	}
	period, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || period <= 0 {
		return quota{}, false, errMalformed
	}
	if f[0] == "max" {
		return quota{}, false, nil
	}
	us, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || us <= 0 {
		return quota{}, false, errMalformed
	}
	return quota{us, period}, true, nil
}

// parseCFS parses cgroup v1's cpu.cfs_quota_us and cpu.cfs_period_us; a
// quota of -1 is no limit (ok false).
func parseCFS(quotaUS, periodUS string) (q quota, ok bool, err error) {
	us, err := strconv.ParseInt(strings.TrimSpace(quotaUS), 10, 64)
	if err != nil {
		return quota{}, false, errMalformed
	}
	if us < 0 {
		return quota{}, false, nil
	}
	period, err := strconv.ParseInt(strings.TrimSpace(periodUS), 10, 64)
	if err != nil || period <= 0 || us == 0 {
		return quota{}, false, errMalformed
	}
	return quota{us, period}, true, nil
}

// cpus returns how many CPUs a process may keep busy: ncpu (its affinity
// mask's), lowered to each quota rounded up, at least 1.
func cpus(ncpu int, quotas []quota) int {
	n := max(ncpu, 1)
	for _, q := range quotas {
		if c := (q.us + q.period - 1) / q.period; c < int64(n) {
			n = int(max(c, 1))
		}
	}
	return n
}

// cpuCgroup returns the path of the process's CPU cgroup in its hierarchy,
// from /proc/self/cgroup: the v1 hierarchy with the cpu controller if
// there is one (it cannot be in v2 then), else the v2 hierarchy
// ("0::/path").
func cpuCgroup(procCgroup string) (path string, v1, ok bool) {
	sc := bufio.NewScanner(strings.NewReader(procCgroup))
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path; the path may hold ':'.
		id, rest, ok1 := strings.Cut(sc.Text(), ":")
		controllers, p, ok2 := strings.Cut(rest, ":")
		switch {
		case !ok1 || !ok2:
		case id == "0" && controllers == "":
			if !v1 {
				path, ok = p, true
			}
		case hasWord(controllers, "cpu"):
			path, v1, ok = p, true, true
		}
	}
	return path, v1, ok
}

// cgroupDir returns the directory of the cgroup at path, and the mount
// point of its hierarchy (the top of what this process can see of it),
// from /proc/self/mountinfo.
func cgroupDir(mountinfo, path string, v1 bool) (dir, top string, ok bool) {
	sc := bufio.NewScanner(strings.NewReader(mountinfo))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// ID parent major:minor root mount-point options [optional...] - type source super-options
		left, right, found := strings.Cut(sc.Text(), " - ")
		l, r := strings.Fields(left), strings.Fields(right)
		if !found || len(l) < 5 || len(r) < 3 {
			continue
		}
		if v1 && (r[0] != "cgroup" || !hasWord(r[2], "cpu")) || !v1 && r[0] != "cgroup2" {
			continue
		}
		root, mnt := unescape(l[3]), unescape(l[4])
		rel, under := strings.CutPrefix(path, root)
		if root == "/" {
			rel, under = path, true
		}
		// A cgroup outside this namespace's view ("/../x") is not here.
		if !under || rel != "" && !strings.HasPrefix(rel, "/") || strings.Contains(rel, "/..") {
			continue
		}
		return strings.TrimSuffix(mnt+rel, "/"), mnt, true
	}
	return "", "", false
}

// hasWord reports whether the comma-separated list holds w.
func hasWord(list, w string) bool { return slices.Contains(strings.Split(list, ","), w) }

// unescape undoes mountinfo's octal escapes of space, tab, newline and
// backslash ("\040").
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
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
