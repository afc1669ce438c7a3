package nspawn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// waitDelay bounds how long Run waits for output after nsenter has exited
// or been killed (a process started inside may hold the pipes).
const waitDelay = 2 * time.Second

// Run runs a command inside the container (nsenter -t Leader -a args...),
// with only PATH in its environment, and returns its standard output, also
// on error. The error carries the exit status (errors.As an
// *exec.ExitError) and the standard error. Run is bounded by ctx, or by
// DefaultCommandTimeout if ctx has no deadline, and refuses once Shutdown
// has begun.
func (m *Machine) Run(ctx context.Context, args ...string) (string, error) {
	if m.stopping.Load() {
		return "", fmt.Errorf("nspawn: %s: run %q: machine is shut down", m.Name, strings.Join(args, " "))
	}
	return m.nsenter(ctx, nil, args...)
}

func (m *Machine) nsenter(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmdline := strings.Join(args, " ")
	if len(args) == 0 {
		return "", fmt.Errorf("nspawn: %s: run: no command", m.Name)
	}
	// A recycled leader pid would make nsenter enter the host's namespaces.
	if !m.leader.alive() {
		return "", fmt.Errorf("nspawn: %s: run %q: container is not running (leader pid %d is gone)", m.Name, cmdline, m.leader.pid)
	}
	ctx, cancel := withDefaultTimeout(ctx, DefaultCommandTimeout)
	defer cancel()
	nsenter := append([]string{"-t", strconv.Itoa(m.leader.pid), "-a", "--"}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", nsenter...)
	cmd.Env = []string{minimalEnv}
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// nsenter forks the command into the container's PID namespace and
	// passes no signal on. On cancel, kill the command (its process group,
	// but not nsenter): nsenter reaps it and exits. Killing nsenter first
	// would leave the command running inside, or, killed too, a zombie that
	// only the host's PID 1 reaps and that holds up the container's poweroff.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		pgid := cmd.Process.Pid // Setpgid: nsenter leads its group
		members, _ := groupMembers(pgid)
		n := 0
		for _, p := range members {
			if p.pid != pgid {
				p.kill(syscall.SIGKILL)
				n++
			}
		}
		if n == 0 {
			return cmd.Process.Kill()
		}
		return nil
	}
	cmd.WaitDelay = waitDelay
	err := cmd.Run()
	if err == nil {
		return stdout.String(), nil
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		return stdout.String(), fmt.Errorf("nspawn: %s: run %q: %w: %s", m.Name, cmdline, err, s)
	}
	return stdout.String(), fmt.Errorf("nspawn: %s: run %q: %w", m.Name, cmdline, err)
}

// WriteFile writes data to the absolute path inside the container,
// creating it with mode 0644 and its directory as needed (e.g.
// /run/systemd/system/app.socket; run `systemctl daemon-reload` after
// writing units). It is bounded by DefaultCommandTimeout.
func (m *Machine) WriteFile(path string, data []byte) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("nspawn: %s: write %q: want an absolute path", m.Name, path)
	}
	if m.stopping.Load() {
		return fmt.Errorf("nspawn: %s: write %s: machine is shut down", m.Name, path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultCommandTimeout)
	defer cancel()
	_, err := m.nsenter(ctx, bytes.NewReader(data),
		"sh", "-c", `umask 022 && mkdir -p -- "${1%/*}/" && cat > "$1"`, "sh", filepath.Clean(path))
	return err
}

// Systemctl runs systemctl inside the container.
func (m *Machine) Systemctl(ctx context.Context, args ...string) (string, error) {
	return m.Run(ctx, append([]string{"systemctl"}, args...)...)
}

// Show returns one property of a unit (systemctl show -p property --value).
func (m *Machine) Show(ctx context.Context, unit, property string) (string, error) {
	out, err := m.Systemctl(ctx, "show", "-p", property, "--value", unit)
	return strings.TrimSuffix(out, "\n"), err
}

// WaitActive polls the unit's ActiveState until it is "active" (a reload
// or start may return while it is still "reloading" or "activating"). It
// fails at once on "failed", and otherwise at the end of ctx, or of
// DefaultWaitTimeout if ctx has no deadline.
func (m *Machine) WaitActive(ctx context.Context, unit string) error {
	ctx, cancel := withDefaultTimeout(ctx, DefaultWaitTimeout)
	defer cancel()
	var state string
	var last error
	for {
		st, err := m.Show(ctx, unit, "ActiveState")
		if err == nil {
			state = st
			switch st {
			case "active":
				return nil
			case "failed":
				result, _ := m.Show(ctx, unit, "Result")
				return fmt.Errorf("nspawn: %s: %s failed (result %q)", m.Name, unit, result)
			}
		} else if !m.leader.alive() || m.stopping.Load() {
			return err
		}
		last = err
		if err := sleepCtx(ctx, pollInterval); err != nil {
			if last != nil {
				return fmt.Errorf("nspawn: %s: wait for %s to be active (state %q): %w (last: %w)", m.Name, unit, state, err, last)
			}
			return fmt.Errorf("nspawn: %s: wait for %s to be active (state %q): %w", m.Name, unit, state, err)
		}
	}
}

// MainPID returns the pid of the unit's main process, as seen inside the
// container. It refuses MainPID=0 (no main process).
func (m *Machine) MainPID(ctx context.Context, unit string) (int, error) {
	s, err := m.Show(ctx, unit, "MainPID")
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("nspawn: %s: MainPID of %s: %w", m.Name, unit, err)
	}
	// `kill -9 0` inside would kill the caller's whole process group on the
	// host: never hand out a pid that is not a process.
	if pid <= 0 {
		return 0, fmt.Errorf("nspawn: %s: %s has no main process (MainPID=%d)", m.Name, unit, pid)
	}
	return pid, nil
}

// Journal returns the unit's journal inside the container (its last 300
// lines), for a failing test's log; an error is described in the text.
func (m *Machine) Journal(ctx context.Context, unit string) string {
	out, err := m.Run(ctx, "journalctl", "--no-pager", "-o", "short-monotonic", "-u", unit)
	if err != nil {
		return condense(out) + "\n(" + err.Error() + ")"
	}
	return condense(out)
}

// condense keeps a long journal readable: a Go program's goroutine dump
// (systemd's watchdog sends SIGABRT) runs to thousands of lines and would
// push out what led to it. Past the first 100 lines, it keeps systemd's
// own lines and those of baton's log (level=), and the last 200 lines.
func condense(journal string) string {
	lines := strings.Split(strings.TrimRight(journal, "\n"), "\n")
	const head, tail = 100, 200
	if len(lines) <= head+tail {
		return journal
	}
	var kept []string
	kept = append(kept, lines[:head]...)
	skipped := 0
	for _, l := range lines[head : len(lines)-tail] {
		if strings.Contains(l, " systemd[1]: ") || strings.Contains(l, " level=") {
			if skipped > 0 {
				kept = append(kept, fmt.Sprintf("  (%d lines left out)", skipped))
				skipped = 0
			}
			kept = append(kept, l)
			continue
		}
		skipped++
	}
	if skipped > 0 {
		kept = append(kept, fmt.Sprintf("  (%d lines left out)", skipped))
	}
	return strings.Join(append(kept, lines[len(lines)-tail:]...), "\n")
}

// withDefaultTimeout bounds ctx by d unless it has a deadline already.
func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
