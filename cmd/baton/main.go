// Command baton runs a pool of worker processes on listening sockets it
// holds, and keeps them serving through crashes and restarts.
//
// Exit codes: 0 success; 1 the service failed (listeners could not be
// opened, workers did not become ready); 2 bad usage or configuration;
// 127 exec-worker could not run the worker command.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/batonhq/baton/config"
	"github.com/batonhq/baton/handoff"
	"github.com/batonhq/baton/supervisor"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitNoExec  = 127
	versionText = "baton 0.1.0-dev"
)

const usageText = `usage: baton COMMAND [ARGS]

commands:
  run      run a worker pool:  baton run --listen http=tcp://127.0.0.1:8080 -- ./server
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
	case "check":
		return checkCmd(rest, stdout, stderr)
	case handoff.ShimCommand:
		if len(rest) > 0 && rest[0] == "--" {
			rest = rest[1:]
		}
		err := handoff.ExecWorker(rest)
		fmt.Fprintf(stderr, "baton: %v\n", err)
		return exitNoExec
	case "version", "--version":
		fmt.Fprintln(stdout, versionText)
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
	if err != nil {
		fmt.Fprintf(stderr, "baton: %v\n", err)
		return exitUsage
	}
	var handler slog.Handler = slog.NewTextHandler(stderr, nil)
	if opts.LogFormat == "json" {
		handler = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(handler)

	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)

	err = supervisor.Run(context.Background(), cfg, supervisor.Options{Logger: log, Signals: signals})
	if err != nil {
		fmt.Fprintf(stderr, "baton: %v\n", err)
		return exitFailed
	}
	return exitOK
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
