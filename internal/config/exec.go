package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/batonhq/baton/internal/excerpt"
)

// execReserve is room for what baton adds to a worker's arguments and
// environment: the shim's arguments, NOTIFY_SOCKET, LISTEN_*, BATON_*,
// WATCHDOG_USEC (the listener names are counted on their own).
const execReserve = 1024

// execLimits returns what exec takes on this machine (execve(2)): each
// argument or environment string, its NUL included, at most one
// (MAX_ARG_STRLEN, 32 pages); all of them, with a pointer each, at most
// all: a quarter of the stack limit, within 6 MiB (three quarters of the
// kernel's 8 MiB _STK_LIM) and at least 32 pages.
func execLimits() (one, all int) {
	one = 32 * os.Getpagesize()
	all = 6 << 20
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_STACK, &rl); err == nil && rl.Cur/4 < uint64(all) {
		all = int(rl.Cur / 4)
	}
	return one, max(all, one)
}

// checkExec refuses a worker command or environment that exec would
// refuse, with the limits execLimits returns; base is the environment
// baton passes on to the workers besides worker.env.
func (c *Config) checkExec(base []string, one, all int) error {
	const pointer = strconv.IntSize / 8
	total := execReserve
	for _, l := range c.Listen {
		total += len(l.Name) + 1 // LISTEN_FDNAMES
	}
	for i, arg := range c.Worker.Command {
		n := len(arg) + 1
		if n > one {
			return c.errorf(fmt.Sprintf("worker.command[%d]", i), "%d bytes: exec takes an argument of at most %d bytes, its NUL included (MAX_ARG_STRLEN)", n, one)
		}
		total += n + pointer
	}
	keys := make([]string, 0, len(c.Worker.Env))
	for k := range c.Worker.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		n := len(k) + 1 + len(c.Worker.Env[k]) + 1
		if n > one {
			return c.errorf("worker.env."+excerpt.Clip(k), "%d bytes as NAME=VALUE: exec takes a variable of at most %d bytes, its NUL included (MAX_ARG_STRLEN)", n, one)
		}
		total += n + pointer
	}
	for _, kv := range base {
		total += len(kv) + 1 + pointer
	}
	if total > all {
		return c.errorf("worker.command", "with worker.env and baton's own environment the worker's exec would take %d bytes, more than the %d it may (a quarter of the stack limit, ulimit -s, at most 6 MiB)", total, all)
	}
	return nil
}

// CheckCommand refuses a worker.command that exec would not run: its
// program is looked up as exec-worker does (exec.LookPath, on the PATH the
// workers get: worker.env's, else baton's), and must be an executable
// file. `baton check` and `baton run` call it before anything starts; a
// reload does not (its workers' failure rolls it back and says why).
func (c *Config) CheckCommand() error {
	if len(c.Worker.Command) == 0 {
		return nil // Validate says so
	}
	name := c.Worker.Command[0]
	if strings.Contains(name, "/") {
		if _, err := exec.LookPath(name); err != nil {
			return c.errorf("worker.command", "%s cannot be run: %w: give the path of an executable file", excerpt.Quote(name), unwrapPath(err))
		}
		return nil
	}
	path, ok := c.Worker.Env["PATH"]
	if !ok {
		path = os.Getenv("PATH")
	}
	for _, dir := range filepath.SplitList(path) {
		// exec.LookPath refuses what it finds in a relative directory
		// (exec.ErrDot), and so does exec-worker.
		if !filepath.IsAbs(dir) {
			continue
		}
		if _, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return nil
		}
	}
	return c.errorf("worker.command", "%s is not in $PATH (%s): install it, or give its path", excerpt.Quote(name), excerpt.Quote(path))
}

// unwrapPath is the reason of a lookup's error without the name it
// repeats ("no such file or directory", "permission denied").
func unwrapPath(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		err = ee.Err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return err
}
