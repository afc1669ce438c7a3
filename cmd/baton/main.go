// Command baton runs a pool of worker processes on listening sockets it
// holds, and keeps them serving through crashes and restarts.
//
// Exit codes: 0 success; 1 the service failed (listeners could not be
// opened, workers did not become ready, a reload failed); 2 bad usage or
// configuration; 3 the restart budget was spent (restart.on_giveup =
// "exit"); 127 exec-worker could not run the worker command.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/logbuf"
	"github.com/batonhq/baton/internal/spawn"
	"github.com/batonhq/baton/internal/supervisor"
	"github.com/batonhq/baton/internal/upgrade"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
	exitGiveUp = 3
	exitNoExec = 127
)

// version is set at build time: go build -ldflags "-X main.version=1.2.3".
var version = "0.1.0-dev"

const usageText = `usage: baton COMMAND [ARGS]

commands:
  run      run a worker pool:  baton run --listen http=tcp://127.0.0.1:8080 -- ./server
  reload   reload a running baton and wait for the outcome
  upgrade  replace a running baton by the executable on disk, sockets kept open
  check    validate a configuration file:  baton check --config FILE
  version  print the version

Run "baton COMMAND -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return runCmd(rest, stderr)
	case "reload", "upgrade":
		return controlCmd(cmd, rest, stdout, stderr)
	case "check":
		return checkCmd(rest, stdout, stderr)
	case spawn.ShimCommand:
		if len(rest) > 0 && rest[0] == "--" {
			rest = rest[1:]
		}
		err := spawn.ExecWorker(rest)
		fmt.Fprintf(stderr, "baton: %v\n", err)
		return exitNoExec
	case "version", "--version":
		fmt.Fprintln(stdout, "baton "+version)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	default:
		fmt.Fprintf(stderr, "baton: unknown command %q\n%s", cmd, usageText)
		return exitUsage
	}
}

func runCmd(args []string, stderr io.Writer) int {
	cfg, opts, err := config.FromArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	// The upgrader comes first: in a baton started by a self-upgrade it
	// takes the sockets passed at descriptors 3 and up, and it tells the
	// waiting parent why this one fails.
	upg, uerr := upgrade.NewUpgrader(supervisor.UpgradeBackstop)
	if err != nil {
		if upg != nil {
			upg.Fail(err)
		}
		fmt.Fprintf(stderr, "baton: %v\n", err)
		return exitUsage
	}
	if uerr != nil {
		fmt.Fprintf(stderr, "baton: %v\n", uerr)
		return exitFailed
	}
	handler := func(w io.Writer) slog.Handler {
		if opts.LogFormat == "json" {
			return slog.NewJSONHandler(w, nil)
		}
		return slog.NewTextHandler(w, nil)
	}
	// baton's log and the workers' output share one buffer that never
	// blocks the supervisor's loop, however slowly stderr is read.
	out := logbuf.New(stderr, logbuf.Options{Note: func(n int) []byte {
		var b bytes.Buffer
		slog.New(handler(&b)).Warn("output dropped: baton's standard error is not read fast enough", "lines", n)
		return b.Bytes()
	}})
	defer out.Close(2 * time.Second)
	log := slog.New(handler(out))

	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(signals)

	// A reload re-reads the file and re-applies the same flags.
	load := func() (*config.Config, error) {
		c, _, err := config.FromArgs(args, io.Discard)
		return c, err
	}
	err = supervisor.Run(context.Background(), cfg, supervisor.Options{
		Logger: log, Signals: signals, Load: load, Upgrader: upg, Version: version, Output: out.Bulk(),
	})
	if err != nil {
		upg.Fail(err)
		fmt.Fprintf(out, "baton: %v\n", err)
		if errors.Is(err, supervisor.ErrGiveUp) {
			return exitGiveUp
		}
		return exitFailed
	}
	return exitOK
}

// controlCmd is `baton reload` and `baton upgrade`: one request to the
// running baton's control socket, waiting for the outcome.
func controlCmd(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("baton "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	control := fs.String("control", "", "control socket `path` (default: control.socket of --config, else $BATON_SOCKET, else $RUNTIME_DIRECTORY/baton.sock, else the one baton of this user running)")
	cfgPath := fs.String("config", "", "the running baton's configuration `file`, to find its control socket")
	pid := fs.Int("pid", 0, "`PID` of the baton: its control socket is found through the process")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the outcome")
	what := "Starts a new generation of workers and waits: exit 0 once it serves, 1 if the reload failed or was rolled back (the old workers still serve). When the baton executable on disk was replaced, the reload is a self-upgrade."
	if cmd == "upgrade" {
		what = "Starts a new baton from the executable on disk, which takes over every socket and starts its own workers, and waits: exit 0 once it serves (the old baton then drains and exits), 1 if it failed (the old baton and its workers still serve)."
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: baton %s [--control PATH | --config FILE | --pid PID] [--timeout D]\n\n%s\n\nflags:\n", cmd, what)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "baton: %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return exitUsage
	}
	path, err := controlPath(*control, *cfgPath, *pid)
	if err != nil {
		fmt.Fprintf(stderr, "baton: %s: %v\n", cmd, err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, err := supervisor.Request(ctx, path, supervisor.ControlRequest{Command: cmd})
	if errors.Is(err, supervisor.ErrNoAnswer) {
		fmt.Fprintf(stderr, "baton: %s: %v (name another with --control PATH, --config FILE or --pid PID)\n", cmd, err)
		return exitFailed
	}
	if err != nil {
		fmt.Fprintf(stderr, "baton: %s: %v\n", cmd, err)
		return exitFailed
	}
	switch {
	case resp.Upgraded && resp.Generation == 0:
		// The new baton answers elsewhere (its control socket moved).
		fmt.Fprintf(stdout, "%s ok: upgraded to baton pid %d (%.2fs)\n", cmd, resp.PID, resp.Seconds)
	case cmd == "upgrade":
		fmt.Fprintf(stdout, "upgrade ok: baton pid %d serving generation %d with %d workers (%.2fs)\n", resp.PID, resp.Generation, resp.Workers, resp.Seconds)
	case resp.Upgraded:
		fmt.Fprintf(stdout, "reload ok: upgraded to baton pid %d, generation %d serving with %d workers (%.2fs)\n", resp.PID, resp.Generation, resp.Workers, resp.Seconds)
	default:
		fmt.Fprintf(stdout, "reload ok: generation %d serving with %d workers (%.2fs)\n", resp.Generation, resp.Workers, resp.Seconds)
	}
	return exitOK
}

// controlPath finds a running baton's control socket: --control, else
// --config's control.socket, else --pid's, else $BATON_SOCKET, else
// systemd's runtime directory (a command run by ExecReload=), else the
// one baton of this user that is running.
func controlPath(control, cfgPath string, pid int) (string, error) {
	switch {
	case control != "":
		return control, nil
	case cfgPath != "":
		c, err := config.Load(cfgPath)
		if err != nil {
			return "", err
		}
		if c.Control.Socket != "" {
			return c.Control.Socket, nil
		}
	case pid > 0:
		return supervisor.ControlSocketOf(pid)
	}
	if p := os.Getenv("BATON_SOCKET"); p != "" {
		return p, nil
	}
	if dir := supervisor.SystemdRuntimeDir(); dir != "" {
		return filepath.Join(dir, supervisor.ControlSocketName), nil
	}
	found := supervisor.Running(os.Geteuid())
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no baton of uid %d is running here, or none answers on a control socket: give --control PATH, --config FILE or --pid PID", os.Geteuid())
	case 1:
		return found[0].Control, nil
	}
	list := make([]string, len(found))
	for i, b := range found {
		list[i] = fmt.Sprintf("pid %d (%s)", b.PID, b.Control)
	}
	return "", fmt.Errorf("%d batons are running: %s: pick one with --pid PID", len(found), strings.Join(list, ", "))
}

func checkCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("baton check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "TOML configuration `file` to validate")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *path == "" {
		fmt.Fprintln(stderr, "baton: check: --config FILE is required")
		return exitUsage
	}
	c, err := config.Load(*path)
	if err == nil {
		err = c.Validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "baton: %v\n", err)
		return exitUsage
	}
	fmt.Fprintf(stdout, "%s: ok (%d listeners, %d workers)\n", *path, len(c.Listen), c.Worker.Count)
	return exitOK
}
