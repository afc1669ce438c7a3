package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/console"
	"github.com/batonhq/baton/internal/excerpt"
	"github.com/batonhq/baton/internal/supervisor"
)

// target is how a command names the running baton it talks to.
type target struct {
	control, config string
	pid             int
}

// commandFlags returns the flag set of a command that talks to a running
// baton, with --control, --config and --pid.
func commandFlags(name string, stderr io.Writer) (*flag.FlagSet, *target) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	t := &target{}
	t.flags(fs)
	return fs, t
}

// flags adds --control, --config and --pid to fs.
func (t *target) flags(fs *flag.FlagSet) {
	fs.StringVar(&t.control, "control", "", "control socket `path` (without it: --config, else --pid, else $BATON_SOCKET, else $RUNTIME_DIRECTORY/baton.sock, else the one baton of this user running)")
	fs.StringVar(&t.config, "config", "", "the running baton's configuration `file`: its control.socket, else the baton of this user started with that file")
	fs.IntVar(&t.pid, "pid", 0, "`PID` of the baton, one of this user's: its control socket is found through the process")
}

// parse parses a control command's flags; ok is false when the command
// is over (help, or a usage error: code says which).
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "baton: %s: unexpected argument %s\n", strings.TrimPrefix(fs.Name(), "baton "), excerpt.Quote(fs.Arg(0)))
		return exitUsage, false
	}
	return 0, true
}

// request sends req to the baton t names; the error is ready to print.
func (t *target) request(ctx context.Context, req supervisor.ControlRequest) (supervisor.ControlResponse, int, error) {
	c, err := t.client()
	if err != nil {
		return supervisor.ControlResponse{}, exitUsage, err
	}
	resp, err := c.Request(ctx, req)
	if errors.Is(err, supervisor.ErrNoAnswer) {
		err = fmt.Errorf("%w (name another with --control PATH, --config FILE or --pid PID)", err)
	}
	if err != nil {
		return resp, exitFailed, err
	}
	return resp, exitOK, nil
}

// controlCmd is `baton reload` and `baton upgrade`: one request to the
// running baton's control socket, waiting for the outcome.
func controlCmd(cmd string, args []string, stdout, stderr io.Writer) int {
	fs, t := commandFlags("baton "+cmd, stderr)
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the outcome")
	what := "Starts a new generation of workers and waits: exit 0 once it serves, 1 if the reload failed or was rolled back (the old workers still serve). When the baton executable on disk was replaced, the reload is a self-upgrade."
	if cmd == "upgrade" {
		what = "Starts a new baton from the executable on disk, which takes over every socket and starts its own workers, and waits: exit 0 once it serves (the old baton then drains and exits), 1 if it failed (the old baton and its workers still serve)."
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: baton %s [--control PATH | --config FILE | --pid PID] [--timeout D]\n\n%s\n\nflags:\n", cmd, what)
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, code, err := t.request(ctx, supervisor.ControlRequest{Command: cmd})
	if err != nil {
		fmt.Fprintf(stderr, "baton: %s: %s\n", cmd, console.Printable(err.Error()))
		return code
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

// operatorCmd is `baton scale N|+N|-N`, `baton restart SLOT` and `baton
// stop`: one request, waiting for its outcome.
func operatorCmd(cmd string, args []string, stdout, stderr io.Writer) int {
	fs, t := commandFlags("baton "+cmd, stderr)
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the outcome")
	var now *bool
	if cmd == "stop" {
		now = fs.Bool("now", false, "drain at once, without stop.delay (or the rest of it)")
	}
	help := map[string][2]string{
		"scale":   {"N|+N|-N", "Sets the number of workers: new ones start and are waited for until ready; the extras drain, as on a reload. The count holds until the next reload, which applies the configuration's worker.count again."},
		"restart": {"SLOT", "Replaces the worker of SLOT (see baton status): a new one starts, and once it is ready the old one drains."},
		"stop":    {"[--now]", "Stops baton as SIGTERM does (after stop.delay, every worker drains) and waits until it has."},
	}[cmd]
	usage, what := help[0], help[1]
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: baton %s [--control PATH | --config FILE | --pid PID] [--timeout D] %s\n\n%s\n\nflags:\n", cmd, usage, what)
		fs.PrintDefaults()
	}
	// The count or slot may come before or after the flags, and "-1" is
	// no flag.
	var numbers, rest []string
	for _, a := range args {
		if len(a) > 1 && a[0] == '-' && isCount(a) {
			numbers = append(numbers, a)
		} else {
			rest = append(rest, a)
		}
	}
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage
		}
		if fs.NArg() == 0 {
			break
		}
		numbers, rest = append(numbers, fs.Arg(0)), fs.Args()[1:]
	}
	req := supervisor.ControlRequest{Command: cmd}
	want := 1
	if cmd == "stop" {
		want, req.Now = 0, *now
	}
	if len(numbers) != want {
		got := make([]string, len(numbers))
		for i, n := range numbers {
			got[i] = excerpt.Quote(n)
		}
		fmt.Fprintf(stderr, "baton %s: want %d argument(s) (%s), got [%s]\n", cmd, want, usage, strings.Join(got, " "))
		return exitUsage
	}
	switch cmd {
	case "scale":
		req.Workers = numbers[0]
	case "restart":
		slot, err := strconv.Atoi(numbers[0])
		if err != nil || slot < 0 {
			fmt.Fprintf(stderr, "baton restart: slot %s: want a number, as baton status shows it\n", excerpt.Quote(numbers[0]))
			return exitUsage
		}
		req.Slot = &slot
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, code, err := t.request(ctx, req)
	if err != nil {
		fmt.Fprintf(stderr, "baton: %s: %s\n", cmd, console.Printable(err.Error()))
		return code
	}
	switch cmd {
	case "stop":
		fmt.Fprintln(stdout, "stop ok: every worker drained, baton exited")
	default:
		fmt.Fprintf(stdout, "%s ok: generation %d serving with %d workers\n", cmd, resp.Generation, resp.Workers)
	}
	return exitOK
}

// isCount reports whether a is a number, signed or not ("4", "+1", "-1").
func isCount(a string) bool {
	_, err := strconv.Atoi(a)
	return err == nil
}

// logsCmd is `baton logs`: the workers' last lines, and with -f every new
// one until interrupted or baton stops.
func logsCmd(args []string, stdout, stderr io.Writer) int {
	fs, t := commandFlags("baton logs", stderr)
	follow := fs.Bool("f", false, "follow: print every new line, of the workers started later too, until interrupted")
	n := fs.Int("n", supervisor.DefaultLogLines, "how many of the last lines to print")
	asJSON := fs.Bool("json", false, "print each line as a JSON object (docs/control.md)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: baton logs [--control PATH | --config FILE | --pid PID] [-f] [-n N] [--json]\n\nPrints the workers' last output lines, each with its time, slot, pid and stream, from the ring baton keeps (1 MiB; lines cut at 4 KiB).\n\nflags:\n")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	c, err := t.client()
	if err != nil {
		fmt.Fprintf(stderr, "baton logs: %s\n", console.Printable(err.Error()))
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if !*follow {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	enc := json.NewEncoder(jsonOut{stdout})
	err = c.Logs(ctx, supervisor.ControlRequest{Lines: n, Follow: *follow}, func(l supervisor.LogLine) {
		if *asJSON {
			enc.Encode(l)
			return
		}
		if l.Dropped > 0 {
			fmt.Fprintf(stdout, "... %d lines dropped: this terminal did not read fast enough\n", l.Dropped)
		}
		fmt.Fprintln(stdout, logLine(l))
	})
	if errors.Is(err, supervisor.ErrNoAnswer) {
		err = fmt.Errorf("%w (name another with --control PATH, --config FILE or --pid PID)", err)
	}
	if err != nil {
		fmt.Fprintf(stderr, "baton logs: %s\n", console.Printable(err.Error()))
		return exitFailed
	}
	return exitOK
}

// statusCmd is `baton status`: the running baton and its workers, as a
// table (redrawn every second with --watch) or JSON.
func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs, t := commandFlags("baton status", stderr)
	asJSON := fs.Bool("json", false, "print the status as JSON (schema: docs/control.md)")
	watch := fs.Bool("watch", false, "redraw the table every second until interrupted")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: baton status [--control PATH | --config FILE | --pid PID] [--json | --watch]\n\nShows baton (pid, version, uptime, generation, listeners, restart budget, last reload) and a row per worker: slot, pid, generation, state, uptime, restarts of its slot, cpu, memory, its last STATUS=.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	if *asJSON && *watch {
		fmt.Fprintln(stderr, "baton status: --json and --watch do not go together")
		return exitUsage
	}
	get := func() (*supervisor.Status, int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, code, err := t.request(ctx, supervisor.ControlRequest{Command: "status"})
		if err == nil && resp.Status == nil {
			err, code = errors.New("the baton sent no status (an older version?)"), exitFailed
		}
		return resp.Status, code, err
	}
	st, code, err := get()
	if err != nil {
		fmt.Fprintf(stderr, "baton status: %s\n", console.Printable(err.Error()))
		return code
	}
	switch {
	case *asJSON:
		enc := json.NewEncoder(jsonOut{stdout})
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return exitFailed
		}
		return exitOK
	case !*watch:
		if err := console.Table(stdout, st, nil, st.At); err != nil {
			return exitFailed
		}
		return exitOK
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(stop)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var prev *supervisor.Status
	for clear := "\x1b[2J"; ; clear = "" {
		// Home, draw, clear what the last frame left below.
		var b strings.Builder
		b.WriteString("\x1b[H" + clear)
		console.Table(&b, st, prev, st.At)
		b.WriteString("\x1b[J")
		if _, err := io.WriteString(stdout, strings.ReplaceAll(b.String(), "\n", "\x1b[K\n")); err != nil {
			return exitFailed
		}
		select {
		case <-stop:
			return exitOK
		case <-tick.C:
		}
		next, code, err := get()
		if err != nil {
			fmt.Fprintf(stderr, "baton status: %s\n", console.Printable(err.Error()))
			return code
		}
		prev, st = st, next
	}
}

// client finds the control socket of the baton t names, the way sourceOf
// says, and says whether it was named or found by looking around (then
// only a baton of this user is asked).
func (t *target) client() (supervisor.Client, error) {
	n := naming{control: t.control, config: t.config, pid: t.pid, envSocket: os.Getenv("BATON_SOCKET"), runtimeDir: supervisor.SystemdRuntimeDir()}
	if n.control == "" && n.config != "" {
		c, err := config.Load(n.config)
		if err != nil {
			return supervisor.Client{}, err
		}
		n.configSocket = c.Control.Socket
	}
	uid := os.Geteuid()
	switch sourceOf(n) {
	case fromControl:
		return supervisor.Client{Path: n.control}, nil
	case fromConfig:
		return supervisor.Client{Path: n.configSocket}, nil
	case fromEnv:
		return supervisor.Client{Path: n.envSocket}, nil
	case fromRuntimeDir:
		return supervisor.Client{Path: filepath.Join(n.runtimeDir, supervisor.ControlSocketName)}, nil
	case fromPID:
		b, err := supervisor.InstanceOf(n.pid, uid)
		return supervisor.Client{Path: b.Control, Own: true}, err
	}
	found := supervisor.Running(uid)
	if n.config != "" {
		found = startedWith(found, n.config)
	}
	b, err := choose(found, n.config, uid)
	return supervisor.Client{Path: b.Control, Own: true}, err
}

// startedWith keeps the batons of found whose --config is the file at
// path: the same file (device and inode), however each names it.
func startedWith(found []supervisor.Instance, path string) []supervisor.Instance {
	want, err := os.Stat(path)
	if err != nil {
		return nil
	}
	var out []supervisor.Instance
	for _, b := range found {
		if fi, err := os.Stat(b.Config); b.Config != "" && err == nil && os.SameFile(fi, want) {
			out = append(out, b)
		}
	}
	return out
}

// jsonOut writes what a json.Encoder encodes through console.EscapeJSON:
// the same values, with nothing in them a terminal would act on.
type jsonOut struct{ io.Writer }

func (w jsonOut) Write(b []byte) (int, error) {
	if _, err := w.Writer.Write(console.EscapeJSON(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// logLine is how baton logs prints a line: its time, slot, pid and
// stream, then the line with what could drive the terminal escaped, as
// baton status shows it.
func logLine(l supervisor.LogLine) string {
	cut := ""
	if l.Cut {
		cut = " [cut]"
	}
	return fmt.Sprintf("%s [worker %d pid %d %s] %s%s", l.Time.Format("2006-01-02T15:04:05.000Z07:00"), l.Slot, l.PID, console.Printable(l.Stream), console.Printable(l.Line), cut)
}
