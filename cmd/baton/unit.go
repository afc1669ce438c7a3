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
	files, err := unit.Files(unit.Spec{Name: name, Listen: listen, User: *user, Baton: *batonPath, Command: fs.Args()}, *root)
	if err != nil {
		fmt.Fprintf(stderr, "baton: %v\n", err)
		return exitUsage
	}
	if !*install {
		for _, f := range files {
			fmt.Fprintf(stdout, "### %s\n%s\n", f.Path, f.Content)
		}
		return exitOK
	}
	for _, f := range files {
		if strings.HasSuffix(f.Path, ".toml") {
			if _, err := os.Stat(f.Path); err == nil {
				fmt.Fprintf(stdout, "kept %s (it exists already)\n", f.Path)
				continue
			}
		}
		err := os.MkdirAll(filepath.Dir(f.Path), 0o755)
		if err == nil {
			err = os.WriteFile(f.Path, []byte(f.Content), 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "baton unit: %v\n", err)
			return exitFailed
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
