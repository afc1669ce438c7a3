package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/batonhq/baton/internal/excerpt"
)

// Options is what the run command line says besides the configuration
// itself.
type Options struct {
	// LogFormat is "text" or "json".
	LogFormat string
	// File is the --config file, absolute; "" without one.
	File string
}

// runFlags are the flags of `baton run`, defined once for FromArgs and
// FileOf.
type runFlags struct {
	fs                                                    *flag.FlagSet
	path, workers, balance, ready, drainTimeout           *string
	reloadTimeout, stopDelay, control, metrics, logFormat *string
	listens                                               listFlag
}

func newRunFlags(usage io.Writer) *runFlags {
	fs := flag.NewFlagSet("baton run", flag.ContinueOnError)
	fs.SetOutput(usage)
	f := &runFlags{
		fs:            fs,
		path:          fs.String("config", "", "TOML configuration `file`"),
		workers:       fs.String("workers", "", "number of workers `N` (worker.count; default: one per CPU, within baton's CPU quota)"),
		balance:       fs.String("balance", "", "how connections reach the workers: auto, shared, reuseport or round-robin (worker.balance; default auto: reuseport where the listeners allow it, else shared)"),
		ready:         fs.String("ready", "", "readiness: notify, fd or delay:DURATION (worker.ready; default notify)"),
		drainTimeout:  fs.String("drain-timeout", "", "how long a stopping worker may drain (worker.drain_timeout; default 30s)"),
		reloadTimeout: fs.String("reload-timeout", "", "how long workers have to become ready (reload.timeout; default 60s)"),
		stopDelay:     fs.String("stop-delay", "", "how long baton keeps serving, not ready, once asked to stop, before the workers drain: for load balancers that learn of a stop late (stop.delay; default 0s)"),
		control:       fs.String("control", "", "control socket `path` (control.socket; default $RUNTIME_DIRECTORY/baton.sock)"),
		metrics:       fs.String("metrics", "", "`host:port` for Prometheus /metrics and the /livez, /readyz probes (control.metrics; default none)"),
	}
	fs.Var(&f.listens, "listen", "listener `NAME=URL`, repeatable (e.g. http=tcp://127.0.0.1:8080); replaces the file's [[listen]]")
	f.logFormat = fs.String("log-format", "text", "baton's own log format: text or json")
	fs.Usage = func() {
		fmt.Fprintf(usage, "usage: baton run [--config FILE] [flags] [-- COMMAND [ARGS...]]\n\nRuns a pool of workers on the listeners, keeping them serving.\n\nflags:\n")
		fs.PrintDefaults()
	}
	return f
}

// FileOf returns the configuration file that `baton run` with these
// arguments reads, as its --config gave it: "" without one, or when the
// arguments do not parse.
func FileOf(args []string) string {
	f := newRunFlags(io.Discard)
	if f.fs.Parse(args) != nil {
		return ""
	}
	return *f.path
}

// FromArgs parses `baton run` arguments: flags, then an optional "--" and
// the worker command. With --config the file is loaded first and each flag
// given overrides its key. The result is validated.
func FromArgs(args []string, usage io.Writer) (*Config, Options, error) {
	f := newRunFlags(usage)
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, Options{}, err
		}
		return nil, Options{}, fmt.Errorf("config: %w", wrapInvalid(err))
	}
	opts := Options{LogFormat: *f.logFormat}
	if opts.LogFormat != "text" && opts.LogFormat != "json" {
		return nil, opts, fmt.Errorf("config: flag --log-format: %w", wrapInvalid(fmt.Errorf("%s: want text or json", excerpt.Quote(opts.LogFormat))))
	}

	c := &Config{}
	if *f.path != "" {
		var err error
		if c, err = Load(*f.path); err != nil {
			return nil, opts, err
		}
		if opts.File, err = filepath.Abs(*f.path); err != nil {
			opts.File = *f.path
		}
	}
	if err := f.flagAfterCommand(args); err != nil {
		return nil, opts, err
	}
	if rest := f.fs.Args(); len(rest) > 0 {
		c.Worker.Command = rest
		c.setOrigin("worker.command", "command line")
	}
	if len(f.listens) > 0 {
		c.Listen = nil
		for i, s := range f.listens {
			name, addr, ok := strings.Cut(s, "=")
			if !ok {
				return nil, opts, fmt.Errorf("config: flag --listen: %w", wrapInvalid(fmt.Errorf("%s: want NAME=URL", excerpt.Quote(s))))
			}
			c.Listen = append(c.Listen, Listener{Name: name, Address: addr})
			c.setOrigin(fmt.Sprintf("listen[%d]", i), "flag --listen")
		}
	}
	set := []struct {
		flag, key string
		value     string
		apply     func(string) error
	}{
		{"workers", "worker.count", *f.workers, func(s string) error {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				return fmt.Errorf("%s: want a whole number of at least 1", excerpt.Quote(s))
			}
			c.Worker.Count = n
			return nil
		}},
		{"ready", "worker.ready", *f.ready, func(s string) error { c.Worker.Ready = s; return nil }},
		{"balance", "worker.balance", *f.balance, func(s string) error { c.Worker.Balance = s; return nil }},
		{"drain-timeout", "worker.drain_timeout", *f.drainTimeout, durationInto(&c.Worker.DrainTimeout, false)},
		{"reload-timeout", "reload.timeout", *f.reloadTimeout, durationInto(&c.Reload.Timeout, false)},
		{"stop-delay", "stop.delay", *f.stopDelay, durationInto(&c.Stop.Delay, true)},
		{"control", "control.socket", *f.control, func(s string) error { c.Control.Socket = s; return nil }},
		{"metrics", "control.metrics", *f.metrics, func(s string) error { c.Control.Metrics = s; return nil }},
	}
	for _, s := range set {
		if s.value == "" {
			continue
		}
		if err := s.apply(s.value); err != nil {
			return nil, opts, fmt.Errorf("config: flag --%s: %w", s.flag, wrapInvalid(err))
		}
		c.setOrigin(s.key, "flag --"+s.flag)
	}
	if err := c.Validate(); err != nil {
		return nil, opts, err
	}
	return c, opts, nil
}

// durationInto parses a duration flag into d: a positive one, or 0 too
// when zero is allowed (it means none).
func durationInto(d *Duration, zero bool) func(string) error {
	return func(s string) error {
		v, err := ParseDuration(s)
		if errors.Is(err, errNoUnit) {
			return err
		}
		switch {
		case zero && (err != nil || v < 0):
			return fmt.Errorf("%s: want a duration such as 5s, or 0s for none", excerpt.Quote(s))
		case !zero && (err != nil || v <= 0):
			return fmt.Errorf("%s: want a positive duration such as 30s", excerpt.Quote(s))
		}
		*d = Duration(v)
		return nil
	}
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// flagAfterCommand refuses one of baton's flags written after the worker
// command with no "--" before the command: flag parsing stops at the
// command, so the flag would silently go to the worker.
func (f *runFlags) flagAfterCommand(args []string) error {
	rest := f.fs.Args()
	if len(rest) == 0 || len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
		return nil
	}
	for _, a := range rest[1:] {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && f.fs.Lookup(name) != nil {
			return fmt.Errorf("config: %w", wrapInvalid(fmt.Errorf("flag %s comes after the worker command %s, which would get it: put baton's flags before the command (or -- before the command to pass it on)",
				excerpt.Quote(a), excerpt.Quote(rest[0]))))
		}
	}
	return nil
}
