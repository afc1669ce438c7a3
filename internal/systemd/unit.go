package systemd

import (
	"os"
	"strings"
)

// Unit returns the systemd service this process runs in ("app.service"),
// from its cgroup; "" when it runs in none (started from a shell, a
// session's scope, a container without systemd).
func Unit() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	return unitOf(string(b))
}

// unitOf reads /proc/self/cgroup's contents: the unified hierarchy's
// line ("0::/system.slice/app.service"), else the v1 name=systemd one,
// whose last element names the service.
func unitOf(cgroup string) string {
	var path string
	for line := range strings.Lines(cgroup) {
		id, rest, _ := strings.Cut(strings.TrimSpace(line), ":")
		controllers, p, ok := strings.Cut(rest, ":")
		switch {
		case !ok:
		case id == "0" && controllers == "":
			path = p
		case controllers == "name=systemd" && path == "":
			path = p
		}
	}
	last := path[strings.LastIndexByte(path, '/')+1:]
	if !strings.HasSuffix(last, ".service") {
		return ""
	}
	return last
}
