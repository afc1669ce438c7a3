package systemd

import "testing"

func TestUnitOf(t *testing.T) {
	for _, tt := range []struct{ cgroup, want string }{
		{"0::/system.slice/app.service\n", "app.service"},
		{"0::/user.slice/user-1000.slice/user@1000.service/app.slice/web.service\n", "web.service"},
		{"0::/user.slice/user-0.slice/session-3.scope\n", ""},
		{"0::/\n", ""},
		{"12:cpu,cpuacct:/system.slice/app.service\n1:name=systemd:/system.slice/app.service\n", "app.service"},
		{"1:name=systemd:/system.slice/app.service\n0::/system.slice/other.service\n", "other.service"},
		{"", ""},
		{"garbage", ""},
	} {
		if got := unitOf(tt.cgroup); got != tt.want {
			t.Errorf("unitOf(%q) = %q, want %q", tt.cgroup, got, tt.want)
		}
	}
}
