package cpulimit

import "testing"

func TestParseMax(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    quota
		ok, bad bool
	}{
		{in: "max 100000\n"},
		{in: "100000 100000\n", want: quota{100000, 100000}, ok: true},
		{in: "150000 100000", want: quota{150000, 100000}, ok: true},
		{in: "50000 100000\n", want: quota{50000, 100000}, ok: true},
		{in: "", bad: true},
		{in: "max", bad: true},
		{in: "100000 0", bad: true},
		{in: "-1 100000", bad: true},
		{in: "lots 100000", bad: true},
		{in: "1 2 3", bad: true},
	} {
		q, ok, err := parseMax(tt.in)
		if q != tt.want || ok != tt.ok || (err != nil) != tt.bad {
			t.Errorf("parseMax(%q) = %v, %v, %v; want %v, %v, error %v", tt.in, q, ok, err, tt.want, tt.ok, tt.bad)
		}
	}
}

func TestParseCFS(t *testing.T) {
	for _, tt := range []struct {
		quota, period string
		want          quota
		ok, bad       bool
	}{
		{quota: "-1\n", period: "100000\n"},
		{quota: "100000\n", period: "100000\n", want: quota{100000, 100000}, ok: true},
		{quota: "250000\n", period: "100000\n", want: quota{250000, 100000}, ok: true},
		{quota: "100000\n", period: "0\n", bad: true},
		{quota: "0\n", period: "100000\n", bad: true},
		{quota: "\n", period: "100000\n", bad: true},
	} {
		q, ok, err := parseCFS(tt.quota, tt.period)
		if q != tt.want || ok != tt.ok || (err != nil) != tt.bad {
			t.Errorf("parseCFS(%q, %q) = %v, %v, %v; want %v, %v, error %v", tt.quota, tt.period, q, ok, err, tt.want, tt.ok, tt.bad)
		}
	}
}

func TestCPUs(t *testing.T) {
	for _, tt := range []struct {
		name   string
		ncpu   int
		quotas []quota
		want   int
	}{
		{"no quota", 64, nil, 64},
		{"1 CPU of 64", 64, []quota{{100000, 100000}}, 1},
		{"half a CPU", 64, []quota{{50000, 100000}}, 1},
		{"1.5 CPUs rounds up", 64, []quota{{150000, 100000}}, 2},
		{"2 CPUs, another period", 64, []quota{{500000, 250000}}, 2},
		{"the smallest of the levels", 64, []quota{{400000, 100000}, {100000, 100000}, {800000, 100000}}, 1},
		{"a quota above the affinity mask", 2, []quota{{400000, 100000}}, 2},
		{"a tiny quota", 8, []quota{{1000, 1000000}}, 1},
		{"no CPU reported", 0, nil, 1},
	} {
		if got := cpus(tt.ncpu, tt.quotas); got != tt.want {
			t.Errorf("%s: cpus(%d, %v) = %d, want %d", tt.name, tt.ncpu, tt.quotas, got, tt.want)
		}
	}
}

// What /proc/self/cgroup and /proc/self/mountinfo say on a host with cgroup
// v1 (this one's cpu hierarchy mounted on its own), on a cgroup v2 host,
// in a v2 container with its own cgroup namespace, and in a v1 container
// without one, lead to the directory of the process's CPU cgroup.
func TestCgroupDir(t *testing.T) {
	const (
		v1Host = "4:memory:/user.slice\n3:cpu,cpuacct:/user.slice/app\n1:name=systemd:/user.slice\n0::/user.slice\n"
		v1Info = "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n" +
			"31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n" +
			"32 30 0:29 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n" +
			"40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
		v2Host = "0::/system.slice/app.service\n"
		v2Info = "25 22 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
		v2Pod  = "0::/\n"
		v2PodI = "700 650 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup ro\n"
		v1Box  = "5:cpu,cpuacct:/docker/abc\n0::/\n"
		v1BoxI = "800 790 0:28 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,relatime - cgroup cgroup rw,cpu,cpuacct\n"
		spaced = "31 30 0:28 / /mnt/my\\040cgroups rw - cgroup cgroup rw,cpu\n"
	)
	for _, tt := range []struct {
		name, cgroup, mountinfo string
		v1                      bool
		dir, top                string
	}{
		{"v1 host", v1Host, v1Info, true, "/sys/fs/cgroup/cpu,cpuacct/user.slice/app", "/sys/fs/cgroup/cpu,cpuacct"},
		{"v2 host", v2Host, v2Info, false, "/sys/fs/cgroup/system.slice/app.service", "/sys/fs/cgroup"},
		{"v2 pod", v2Pod, v2PodI, false, "/sys/fs/cgroup", "/sys/fs/cgroup"},
		{"v1 container", v1Box, v1BoxI, true, "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct"},
		{"escaped mount point", "3:cpu:/a\n", spaced, true, "/mnt/my cgroups/a", "/mnt/my cgroups"},
		{"v2 without a v2 mount", v2Host, v1Info[:len(v1Info)-len("40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")], false, "", ""},
		{"outside the namespace", "0::/../other\n", v2PodI, false, "", ""},
		{"v1 mount of another cgroup", "5:cpu:/docker/xyz\n", v1BoxI, true, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path, v1, ok := cpuCgroup(tt.cgroup)
			if !ok || v1 != tt.v1 {
				t.Fatalf("cpuCgroup = %q, v1 %v, %v; want v1 %v", path, v1, ok, tt.v1)
			}
			dir, top, ok := cgroupDir(tt.mountinfo, path, v1)
			if dir != tt.dir || top != tt.top || ok != (tt.dir != "") {
				t.Errorf("cgroupDir(%q) = %q, %q, %v; want %q, %q", path, dir, top, ok, tt.dir, tt.top)
			}
		})
	}
	if _, _, ok := cpuCgroup("garbage\n"); ok {
		t.Error("cpuCgroup found a cgroup in garbage")
	}
}
