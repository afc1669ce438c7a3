package cpulimit

import (
	"os"
	"path/filepath"
	"runtime"
)

// CPUs returns how many CPUs baton's processes may keep busy at once: the
// CPUs of its affinity mask (runtime.NumCPU), lowered to the smallest CPU
// quota of its cgroup and those above it, rounded up; at least 1.
func CPUs() int { return cpus(runtime.NumCPU(), readQuotas()) }

// readQuotas returns the CPU quotas of this process's cgroup and of each
// one above it that it can see. A file it cannot read or parse is no
// quota: without a cgroup, baton uses every CPU it may run on.
func readQuotas() []quota {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	path, v1, ok := cpuCgroup(string(b))
	if !ok {
		return nil
	}
	if b, err = os.ReadFile("/proc/self/mountinfo"); err != nil {
		return nil
	}
	dir, top, ok := cgroupDir(string(b), path, v1)
	if !ok {
		return nil
	}
	var qs []quota
	for {
		if q, ok := readQuota(dir, v1); ok {
			qs = append(qs, q)
		}
		if len(dir) <= len(top) {
			return qs
		}
		dir = filepath.Dir(dir)
	}
}

// readQuota reads the CPU quota of the cgroup at dir, if it has one.
func readQuota(dir string, v1 bool) (quota, bool) {
	var q quota
	var ok bool
	var err error
	if v1 {
		us, err1 := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
		period, err2 := os.ReadFile(filepath.Join(dir, "cpu.cfs_period_us"))
		if err1 != nil || err2 != nil {
			return quota{}, false
		}
		q, ok, err = parseCFS(string(us), string(period))
	} else {
		max, err1 := os.ReadFile(filepath.Join(dir, "cpu.max"))
		if err1 != nil {
			return quota{}, false // the root, or the cpu controller is not enabled here
		}
		q, ok, err = parseMax(string(max))
	}
	return q, ok && err == nil
}
