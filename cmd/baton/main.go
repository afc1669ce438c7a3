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
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/internal/excerpt"
	"github.com/batonhq/baton/internal/logbuf"
	"github.com/batonhq/baton/internal/memtrim"
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

// usageText is `baton`'s usage: run, every command of the control
// protocol that has one, then the others.
var usageText = func() string {
	var b strings.Builder
	b.WriteString("usage: baton COMMAND [ARGS]\n\ncommands:\n")
	line := func(name, what string) { fmt.Fprintf(&b, "  %-8s %s\n", name, what) }
	line("run", "run a worker pool:  baton run --listen http=tcp://127.0.0.1:8080 -- ./server")
	for _, c := range control.Commands {
		if c.Summary != "" {
			line(c.Name, c.Summary)
		}
	}
	line("check", "validate a configuration file:  baton check --config FILE")
	line("unit", "systemd units for a service:  baton unit app --listen http=tcp://0.0.0.0:80 -- ./server")
	line("version", "print the version")
	b.WriteString("\nA command for a running baton takes the systemd service's name first (baton status app,\nbaton scale app 4), or --control PATH, --config FILE or --pid PID; alone, the one baton of this user.\nRun \"baton COMMAND -h\" for a command's flags.\n")
	return b.String()
}()

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
	case "check":
		return checkCmd(rest, stdout, stderr)
	case "unit":
		return unitCmd(rest, stdout, stderr)
	case spawn.ShimCommand:
		if len(rest) > 0 && rest[0] == "--" {
			rest = rest[1:]
		}
		err := spawn.ExecWorker(rest)
		fail(stderr, spawn.ShimCommand, err)
		return exitNoExec
	case "version", "--version":
		fmt.Fprintln(stdout, "baton "+version)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	default:
		if c := control.Lookup(cmd); c != nil && c.Summary != "" {
			return controlCmd(c, rest, stdout, stderr)
		}
		fmt.Fprintf(stderr, "baton: unknown command %s: baton -h lists the commands\n", excerpt.Quote(cmd))
		return exitUsage
	}
}

func runCmd(args []string, stderr io.Writer) int {
	// With SIGPIPE caught, a write to a stdout or stderr whose reader has
	// gone fails with EPIPE (the line is dropped and counted) instead of
	// killing baton and its workers. Caught, not ignored: an ignored
	// disposition would be inherited by the workers across exec.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	memtrim.Setup()
	// Package initialisation faulted in most of the executable: given back
	// now, the start's peak is initialisation's alone, not that plus the
	// start's own.
	memtrim.Trim()
	// The flags' usage is for -h alone: a wrong flag is one line.
	var usage bytes.Buffer
	cfg, opts, err := config.FromArgs(args, &usage)
	if errors.Is(err, flag.ErrHelp) {
		stderr.Write(usage.Bytes())
		return exitOK
	}
	if err == nil {
		err = cfg.CheckCommand() // before anything starts
	}
	handler := func(w io.Writer) slog.Handler {
		if opts.LogFormat == "json" {
			return slog.NewJSONHandler(w, &slog.HandlerOptions{ReplaceAttr: seconds})
		}
		return slog.NewTextHandler(w, nil)
	}
	// With --log-format json, the line that says why baton stops is a
	// JSON record too.
	failRun := func(w io.Writer, err error) {
		if opts.LogFormat == "json" {
			slog.New(handler(w)).Error("baton run: " + message("run", err))
			return
		}
		fail(w, "run", err)
	}
	// Signals are caught before the upgrader reports this process's pid
	// to a parent, which may send SIGTERM from then on.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(signals)
	// The upgrader comes first: in a baton started by a self-upgrade it
	// takes the sockets passed at descriptors 3 and up, and it tells the
	// waiting parent why this one fails.
	upg, uerr := upgrade.NewUpgrader(supervisor.UpgradeBackstop)
	if err != nil {
		if upg != nil {
			upg.Fail(err)
		}
		failRun(stderr, err)
		return exitUsage
	}
	if uerr != nil {
		failRun(stderr, uerr)
		return exitFailed
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

	// A reload re-reads the file and re-applies the same flags.
	load := func() (*config.Config, error) {
		c, _, err := config.FromArgs(args, io.Discard)
		return c, err
	}
	// Under systemd, the workers' lines go to journald with fields that
	// say whose they are.
	toJournal, _ := journal.StderrIsJournalStream()
	err = supervisor.Run(context.Background(), cfg, supervisor.Options{
		Logger: log, Signals: signals, Load: load, Upgrader: upg, Version: version, ConfigFile: opts.File, Output: out.Bulk(), OutputJSON: opts.LogFormat == "json", Journal: toJournal,
	})
	if err != nil {
		upg.Fail(err)
		failRun(out, err)
		if errors.Is(err, supervisor.ErrGiveUp) {
			return exitGiveUp
		}
		return exitFailed
	}
	return exitOK
}

func checkCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("baton check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "TOML configuration `file` to validate (or the one argument)")
	noCommand := fs.Bool("no-command", false, "do not look for worker.command here: the file is for another machine or a container image")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: baton check [--no-command] [--config] FILE\n\nValidates a configuration file as baton run would read it.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	switch {
	case fs.NArg() == 1 && *path == "":
		*path = fs.Arg(0)
	case fs.NArg() > 0:
		extra := fs.Arg(fs.NArg() - 1)
		fail(stderr, "check", fmt.Errorf("unexpected argument %s: want one file, baton check FILE or baton check --config FILE", excerpt.Quote(extra)))
		return exitUsage
	case *path == "":
		fail(stderr, "check", errors.New("no file: baton check FILE or baton check --config FILE"))
		return exitUsage
	}
	c, err := config.Load(*path)
	if err == nil {
		err = c.Validate()
	}
	if err == nil && !*noCommand {
		err = c.CheckCommand()
	}
	if err != nil {
		fail(stderr, "check", err)
		return exitUsage
	}
	fmt.Fprintf(stdout, "%s: ok (%d listeners, %d workers)\n", *path, len(c.Listen), c.Worker.Count)
	return exitOK
}

// seconds writes a duration in a JSON log line as seconds (a float), not
// slog's nanoseconds: what log pipelines and people expect of "after".
func seconds(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.Float64(a.Key, a.Value.Duration().Seconds())
	}
	return a
}
