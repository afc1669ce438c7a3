// Package cpulimit says how many CPUs baton's processes may keep busy at
// once, the default worker.count: the CPUs of baton's affinity mask,
// lowered to the CPU quota of its cgroup rounded up, and never below 1.
// The quota is cgroup v2's cpu.max or v1's cpu.cfs_quota_us over
// cpu.cfs_period_us, the smallest on the way from baton's cgroup up to
// the root of the hierarchy it can see: a pod limited to 1 CPU on a
// 64-CPU node gets 1 worker, not 64.
//
// Go's own default GOMAXPROCS follows the same quota but never goes
// below 2, and a GOMAXPROCS set in baton's environment is about baton's
// threads, not its workers, so the quota is read here. The decision is
// pure (limit.go: parsing and arithmetic, table-tested); cgroup.go only
// finds and reads the files.
package cpulimit
