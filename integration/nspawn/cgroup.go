package nspawn

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// cgroup is a machine's own cgroup, one directory per hierarchy that
// systemd-nspawn uses (the cgroup2 one and, on a hybrid host, the v1
// name=systemd one). systemd-nspawn --keep-unit creates "payload" (the
// container) and "supervisor" (itself) below it.
type cgroup struct {
	dirs []string
}

// newCgroup creates "nspawn-<name>" below the caller's cgroup in each
// hierarchy systemd-nspawn uses. It returns an empty cgroup (nspawn then
// uses the caller's, as docs/testing.md says) when there is no hierarchy to use.
func newCgroup(name string) (*cgroup, error) {
	dirs, err := cgroupDirs(name)
	if err != nil {
		return nil, err
	}
	cg := &cgroup{}
	for _, dir := range dirs {
		if err := os.Mkdir(dir, 0o755); err != nil {
			cg.remove()
			if errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("nspawn: machine name %q in use: %w", name, err)
			}
			return nil, fmt.Errorf("nspawn: cgroup: %w", err)
		}
		cg.dirs = append(cg.dirs, dir)
	}
	return cg, nil
}

// cgroupDirs returns the directories of machine name's cgroup.
func cgroupDirs(name string) ([]string, error) {
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	ms, err := mounts()
	if err != nil {
		return nil, fmt.Errorf("nspawn: cgroup: %w", err)
	}
	var dirs []string
	done := map[string]bool{} // a hierarchy may be mounted twice
	for _, m := range ms {
		var h string
		switch {
		case m.fstype == "cgroup2":
			h = "unified"
		case m.fstype == "cgroup" && hasOpt(m.superOpts, "name=systemd"):
			h = "name=systemd"
		default:
			continue
		}
		path := own[h]
		if path == "" || done[h] {
			continue
		}
		done[h] = true
		dirs = append(dirs, filepath.Join(m.point, path, "nspawn-"+name))
	}
	return dirs, nil
}

// ownCgroups reads /proc/self/cgroup: "unified" and "name=systemd" map to
// the caller's path in those hierarchies.
func ownCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("nspawn: cgroup: %w", err)
	}
	defer f.Close()
	own := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-id:controllers:path
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			own["unified"] = f[2]
		case hasOpt(f[1], "name=systemd"):
			own["name=systemd"] = f[2]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("nspawn: cgroup: %w", err)
	}
	return own, nil
}

func hasOpt(opts, opt string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// procsFiles are the cgroup.procs files a new process is written to so that
// it starts in this cgroup.
func (cg *cgroup) procsFiles() []string {
	var fs []string
	for _, d := range cg.dirs {
		fs = append(fs, filepath.Join(d, "cgroup.procs"))
	}
	return fs
}

// procs lists every process left anywhere in the cgroup's trees.
func (cg *cgroup) procs() []int {
	seen := map[int]bool{}
	var pids []int
	for _, d := range cg.dirs {
		filepath.WalkDir(d, func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			for _, s := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(s); err == nil && pid > 0 && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// remove removes the cgroup's directories, deepest first (a cgroup is
// removed with rmdir, and only once it has no children and no processes).
func (cg *cgroup) remove() error {
	var errs []error
	for _, d := range cg.dirs {
		var dirs []string
		filepath.WalkDir(d, func(path string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, dir := range dirs {
			if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("nspawn: remove cgroup %s: %w", dir, os.NewSyscallError("rmdir", err)))
			}
		}
	}
	cg.dirs = nil
	return errors.Join(errs...)
}
