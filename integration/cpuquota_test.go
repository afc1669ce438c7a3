package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// baton started in a cgroup with a CPU quota and no worker.count runs one
// worker per CPU of the quota, rounded up: 1 for 1 CPU or half of one, 2
// for 1.5 even with GOMAXPROCS=1 in its environment (that is about
// baton's threads, not its workers); a quota on the cgroup above baton's
// counts too (a pod's, over its container's).
func TestWorkerCountFollowsCPUQuota(t *testing.T) {
	h := cpuHierarchy(t)
	for _, tt := range []struct {
		name          string
		quota, period int64 // µs, on a cgroup made for the test
		nested        bool  // baton in a child of it that has no quota
		env           []string
		want          int
	}{
		{"1 CPU", 100000, 100000, false, nil, 1},
		{"half a CPU", 50000, 100000, false, nil, 1},
		{"1.5 CPUs with GOMAXPROCS=1", 150000, 100000, false, []string{"GOMAXPROCS=1"}, 2},
		{"1 CPU on the parent", 100000, 100000, true, nil, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want > runtime.NumCPU() {
				t.Skipf("this machine has %d CPUs: a quota of %d cannot be told from their number", runtime.NumCPU(), tt.want)
			}
			cg := h.make(t, "", tt.quota, tt.period)
			if tt.nested {
				cg = h.make(t, cg, -1, 0)
			}
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			// The shell moves itself into the cgroup, then becomes baton.
			p := start(t, tt.env, "/bin/sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, cg,
				bin.baton, "run", "--listen", "http=tcp://"+addr, "--", bin.hello)
			p.out.wait(reAllReady, 30*time.Second)
			if in := cgroupOf(t, p.cmd.Process.Pid, h); in != cg {
				t.Fatalf("baton runs in cgroup %s, not in %s", in, cg)
			}
			line := p.out.wait(regexp.MustCompile(`msg="starting workers"`), time.Second)
			if !strings.Contains(line, " count="+strconv.Itoa(tt.want)+" ") {
				t.Errorf("with a quota of %d µs per %d µs and no worker.count: %s; want count=%d", tt.quota, tt.period, line, tt.want)
			}
			if n := p.out.count(reWorkerReady); n != tt.want {
				t.Errorf("%d workers ready, want %d", n, tt.want)
			}
			if got := readyBody(t, addr); !strings.HasPrefix(got, "hello from pid") {
				t.Errorf("GET / through baton in the cgroup: %q", got)
			}
		})
	}
}

// readyBody returns the body of GET / at addr.
func readyBody(t *testing.T, addr string) string {
	t.Helper()
	body, err := getOnce(addr, "/")
	if err != nil {
		t.Fatalf("GET http://%s/: %v", addr, err)
	}
	return body
}

// cgroupHierarchy is the mounted cgroup hierarchy with the cpu controller.
type cgroupHierarchy struct {
	mnt string
	v2  bool
}

// cpuHierarchy finds where cgroups with a CPU quota can be made: cgroup
// v2 with the cpu controller enabled for the root's children, else the v1
// hierarchy of the cpu controller. It skips the test, saying why, when
// there is none or it cannot be written to. It changes no cgroup it did
// not make.
func cpuHierarchy(t *testing.T) cgroupHierarchy {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("making a cgroup takes root")
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var v1, why string
	for _, line := range strings.Split(string(b), "\n") {
		left, right, ok := strings.Cut(line, " - ")
		l, r := strings.Fields(left), strings.Fields(right)
		if !ok || len(l) < 5 || len(r) < 3 || l[3] != "/" {
			continue
		}
		switch mnt := l[4]; {
		case r[0] == "cgroup2":
			controllers, _ := os.ReadFile(filepath.Join(mnt, "cgroup.controllers"))
			enabled, _ := os.ReadFile(filepath.Join(mnt, "cgroup.subtree_control"))
			switch {
			case slices.Contains(strings.Fields(string(enabled)), "cpu"):
				return cgroupHierarchy{mnt: mnt, v2: true}
			case slices.Contains(strings.Fields(string(controllers)), "cpu"):
				why = fmt.Sprintf("cgroup v2 at %s has the cpu controller but does not enable it for its children (cgroup.subtree_control), and this test changes no cgroup it did not make", mnt)
			}
		case r[0] == "cgroup" && slices.Contains(strings.Split(r[2], ","), "cpu"):
			v1 = mnt
		}
	}
	if v1 != "" {
		return cgroupHierarchy{mnt: v1}
	}
	if why == "" {
		why = "no cgroup hierarchy with the cpu controller is mounted at its root (/proc/self/mountinfo)"
	}
	t.Skip(why)
	return cgroupHierarchy{}
}

// make makes a cgroup under parent (the hierarchy's root if ""), with a
// CPU quota of quota µs per period µs unless quota is -1, removed when the
// test ends. It returns its directory.
func (h cgroupHierarchy) make(t *testing.T, parent string, quota, period int64) string {
	t.Helper()
	if parent == "" {
		parent = h.mnt
	} else if h.v2 {
		// A cgroup this test made, with no process in it: its children
		// get the cpu controller.
		write(t, filepath.Join(parent, "cgroup.subtree_control"), "+cpu")
	}
	dir := filepath.Join(parent, fmt.Sprintf("baton-it-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
			t.Skipf("cannot make a cgroup: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Once its processes are gone; an exiting one may still count
		// for a moment.
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := syscall.Rmdir(dir)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				return
			}
			if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
				t.Errorf("remove cgroup %s: %v (processes: %q)", dir, err, procs)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	switch {
	case quota < 0:
	case h.v2:
		write(t, filepath.Join(dir, "cpu.max"), fmt.Sprintf("%d %d", quota, period))
	default:
		write(t, filepath.Join(dir, "cpu.cfs_period_us"), strconv.FormatInt(period, 10))
		write(t, filepath.Join(dir, "cpu.cfs_quota_us"), strconv.FormatInt(quota, 10))
	}
	return dir
}

// write writes s to a cgroup file.
func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0); err != nil {
		t.Fatal(err)
	}
}

// cgroupOf returns the directory of pid's cgroup in h.
func cgroupOf(t *testing.T, pid int, h cgroupHierarchy) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && (h.v2 && f[0] == "0" || !h.v2 && slices.Contains(strings.Split(f[1], ","), "cpu")) {
			return filepath.Join(h.mnt, f[2])
		}
	}
	t.Fatalf("pid %d is in no cgroup of %s:\n%s", pid, h.mnt, b)
	return ""
}
