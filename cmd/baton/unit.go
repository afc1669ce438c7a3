package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/batonhq/baton/internal/unit"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// unitCmd is `baton unit NAME`: the systemd units (and a config) that
// run a service under baton, printed, or installed with --install.
func unitCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("baton unit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var listen listFlag
	fs.Var(&listen, "listen", "listener `NAME=URL`, repeatable (default http=tcp://127.0.0.1:8080): one .socket unit each")
	user := fs.String("user", "", "run baton and the workers as `USER` (default root)")
	self, _ := os.Executable()
	batonPath := fs.String("baton", self, "the baton `executable` the service runs")
	workDir := fs.String("workdir", "", "the workers' working `directory` (default /var/lib/NAME, the state directory systemd makes)")
	jit := fs.Bool("jit", false, "leave out MemoryDenyWriteExecute=yes, which a JIT runtime (Node, Java, PyPy) cannot start under")
	install := fs.Bool("install", false, "write the files (the config only if there is none yet) and run systemctl daemon-reload")
	root := fs.String("root", "/", "install under this `directory` instead of / (no daemon-reload then)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: baton unit NAME [--listen NAME=URL ...] [--user USER] [--install] -- COMMAND [ARGS...]\n\nPrints NAME.socket (one per listener), NAME.service and /etc/NAME/baton.toml: systemd holds the sockets, baton runs COMMAND on them, systemctl reload NAME reloads through baton. With --install they are written under /etc and systemd reloads its units (pm2 startup's job).\n\nflags:\n")
		fs.PrintDefaults()
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fs.Usage()
			return exitOK
		}
		fmt.Fprintln(stderr, "baton unit: want the service's NAME first")
		return exitUsage
	}
	name := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	files, err := unit.Files(unit.Spec{Name: name, Listen: listen, User: *user, Baton: *batonPath, Command: fs.Args(), WorkDir: *workDir, JIT: *jit}, *root)
	if err != nil {
		fail(stderr, "unit", err)
		return exitUsage
	}
	if dir := buildDir(*batonPath); dir != "" {
		fmt.Fprintf(stderr, "baton unit: warning: %s is in the source tree %s: the service runs whatever is built there next; install baton in /usr/local/bin and give --baton /usr/local/bin/baton\n", *batonPath, dir)
	}
	if !*install {
		for _, f := range files {
			fmt.Fprintf(stdout, "### %s\n%s\n", f.Path, f.Content)
		}
		return exitOK
	}
	for _, f := range files {
		kept, err := writeNew(f, strings.HasSuffix(f.Path, ".toml"))
		if err != nil {
			fmt.Fprintf(stderr, "baton unit: %v\n", err)
			return exitFailed
		}
		if kept {
			fmt.Fprintf(stdout, "kept %s (it exists already)\n", f.Path)
			continue
		}
		fmt.Fprintf(stdout, "wrote %s\n", f.Path)
	}
	if *root == "/" {
		if out, err := exec.Command("systemctl", "daemon-reload").CombinedOutput(); err != nil {
			fmt.Fprintf(stderr, "baton unit: systemctl daemon-reload: %v: %s\n", err, strings.TrimSpace(string(out)))
			return exitFailed
		}
	}
	fmt.Fprintf(stdout, "next: systemctl enable --now %s.socket && systemctl start %s.service\n", name, name)
	return exitOK
}

// writeNew writes f without following a link someone else may have put
// in its place: into a new file beside it, renamed over it (a link is
// replaced, not written through). With keep, an existing file (or link)
// stays, and kept says so.
func writeNew(f unit.File, keep bool) (kept bool, err error) {
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
		return false, err
	}
	if keep {
		if _, err := os.Lstat(f.Path); err == nil {
			return true, nil
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.Path), "."+filepath.Base(f.Path)+".*") // O_EXCL: a new file
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(f.Content)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	if keep {
		// Link, not rename: fails if the config appeared meanwhile.
		if err := os.Link(tmp.Name(), f.Path); err != nil {
			if errors.Is(err, os.ErrExist) {
				return true, nil
			}
			return false, err
		}
		return false, nil
	}
	return false, os.Rename(tmp.Name(), f.Path)
}

// buildDir returns the source tree that path was built in, "" if none: the
// nearest directory above it with a go.mod or a .git.
func buildDir(path string) string {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		for _, mark := range []string{"go.mod", ".git"} {
			if _, err := os.Stat(filepath.Join(dir, mark)); err == nil {
				return dir
			}
		}
		if dir == "/" || dir == "." {
			return ""
		}
	}
}
