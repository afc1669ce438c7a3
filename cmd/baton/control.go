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

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/console"
	"github.com/batonhq/baton/internal/control"
)

// target is how a command names the running baton it talks to.
type target struct {
	control, config string
	pid             int
	service         string // SERVICE, the systemd service's name
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
	fs.StringVar(&t.control, "control", "", "control socket `path` (without it: --config, else --pid, else SERVICE's, else $BATON_SOCKET, else $RUNTIME_DIRECTORY/baton.sock, else the one baton of this user running)")
	fs.StringVar(&t.config, "config", "", "the running baton's configuration `file`: its control.socket, else the baton of this user started with that file")
	fs.IntVar(&t.pid, "pid", 0, "`PID` of the baton, one of this user's: its control socket is found through the process")
}

// parse parses the flags and operands of `baton NAME`: [SERVICE], then
// the command's argument if it takes one (splitOperands), into t and req;
// ok is false when the command is over (help, or a usage error: code
// says which).
func parse(fs *flag.FlagSet, c *control.Command, t *target, req *control.Request, args []string, stderr io.Writer) (code int, ok bool) {
	ops, code, ok := operands(fs, args, c.Arg != nil, stderr)
	if !ok {
		return code, false
	}
	service, arg, err := splitOperands(c, ops)
	if err == nil && service != "" {
		t.service, err = serviceName(service)
	}
	if err == nil && c.Arg != nil {
		err = c.Arg(req, arg)
	}
	if err != nil {
		fail(stderr, c.Name, err)
		return exitUsage, false
	}
	return 0, true
}

// operands parses a control command's flags, which may stand before,
// between or after its operands, and returns the operands; ok is false
// when the command is over, as for parseFlags. With counts, a negative
// number ("-1") is an operand, not a flag, and comes after the others (a
// service's name never starts with '-').
func operands(fs *flag.FlagSet, args []string, counts bool, stderr io.Writer) (ops []string, code int, ok bool) {
	var numbers, rest []string
	for _, a := range args {
		if counts && len(a) > 1 && a[0] == '-' && isCount(a) {
			numbers = append(numbers, a)
		} else {
			rest = append(rest, a)
		}
	}
	for {
		if code, ok := parseFlags(fs, rest, stderr); !ok {
			return nil, code, false
		}
		if fs.NArg() == 0 {
			return append(ops, numbers...), 0, true
		}
		ops, rest = append(ops, fs.Arg(0)), fs.Args()[1:]
	}
}

// lookupCode is the exit code of a command whose baton was not found:
// 1 when nothing runs where a SERVICE's baton would listen, else 2 (the
// command line names no baton, or names it wrongly).
func lookupCode(err error) int {
	if errors.Is(err, errNoService) {
		return exitFailed
	}
	return exitUsage
}

// request sends req to the baton t names; the error is ready to print.
func (t *target) request(ctx context.Context, req control.Request) (control.Response, int, error) {
	c, err := t.client()
	if err != nil {
		return control.Response{}, lookupCode(err), err
	}
	resp, err := c.Request(ctx, req)
	if errors.Is(err, control.ErrNoAnswer) {
		err = fmt.Errorf("%w (name another with --control PATH, --config FILE or --pid PID)", err)
	}
	if err != nil {
		return resp, exitFailed, err
	}
	return resp, exitOK, nil
}

// controlCmd runs `baton NAME` for a command of the control protocol, the
// way its row of control.Commands says.
func controlCmd(c *control.Command, args []string, stdout, stderr io.Writer) int {
	switch c.View {
	case control.Table:
		return statusCmd(c, args, stdout, stderr)
	case control.Lines:
		return logsCmd(c, args, stdout, stderr)
	}
	return outcomeCmd(c, args, stdout, stderr)
}

// usage sets fs's usage to the command's synopsis, what it does and its
// flags.
func usage(fs *flag.FlagSet, c *control.Command, synopsis string, stderr io.Writer) {
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: baton %s [SERVICE | --control PATH | --config FILE | --pid PID] %s\n\n%s\n\nSERVICE is a systemd service's name (app or app.service): its baton listens in its RuntimeDirectory=.\n\nflags:\n", c.Name, synopsis, c.Help)
		fs.PrintDefaults()
	}
}

// outcomeCmd is `baton reload`, `upgrade`, `scale N|+N|-N`, `restart
// SLOT`, `stop` and every other command whose answer is an outcome: one
// request to the running baton's control socket, waiting for it.
func outcomeCmd(c *control.Command, args []string, stdout, stderr io.Writer) int {
	fs, t := commandFlags("baton "+c.Name, stderr)
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the outcome")
	req := control.Request{Command: c.Name}
	if c.Flags != nil {
		c.Flags(fs, &req)
	}
	usage(fs, c, strings.TrimSpace("[--timeout D] "+c.Usage), stderr)
	if code, ok := parse(fs, c, t, &req, args, stderr); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, code, err := t.request(ctx, req)
	if err != nil {
		fail(stderr, c.Name, err)
		return code
	}
	fmt.Fprintln(stdout, c.Print(resp))
	return exitOK
}

// isCount reports whether a is a number, signed or not ("4", "+1", "-1").
func isCount(a string) bool {
	_, err := strconv.Atoi(a)
	return err == nil
}

// logsCmd is `baton logs`: the workers' last lines, and with -f every new
// one until interrupted or baton stops.
func logsCmd(c *control.Command, args []string, stdout, stderr io.Writer) int {
	fs, t := commandFlags("baton "+c.Name, stderr)
	follow := fs.Bool("f", false, "follow: print every new line, of the workers started later too, until interrupted")
	n := fs.Int("n", control.DefaultLogLines, "how many of the last lines to print")
	asJSON := fs.Bool("json", false, "print each line as a JSON object (docs/control.md)")
	req := control.Request{Command: c.Name}
	c.Flags(fs, &req)
	usage(fs, c, c.Usage, stderr)
	if code, ok := parse(fs, c, t, &req, args, stderr); !ok {
		return code
	}
	if err := c.Check(req); err != nil {
		fail(stderr, c.Name, err)
		return exitUsage
	}
	if *n < 0 {
		fail(stderr, c.Name, fmt.Errorf("-n %d: want a count of lines, 0 or more", *n))
		return exitUsage
	}
	if *n > control.MaxLogLines {
		fmt.Fprintf(stderr, "baton %s: -n %d: baton keeps at most the last %d lines: printing those\n", c.Name, *n, control.MaxLogLines)
		*n = control.MaxLogLines
	}
	client, err := t.client()
	if err != nil {
		fail(stderr, c.Name, err)
		return lookupCode(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if !*follow {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	enc := json.NewEncoder(jsonOut{stdout})
	req.Lines, req.Follow = n, *follow
	err = client.Logs(ctx, req, func(l control.LogLine) {
		if *asJSON {
			enc.Encode(l)
			return
		}
		if l.Dropped > 0 {
			fmt.Fprintf(stdout, "... %d lines dropped: this terminal did not read fast enough\n", l.Dropped)
		}
		fmt.Fprintln(stdout, logLine(l))
	})
	if errors.Is(err, control.ErrNoAnswer) {
		err = fmt.Errorf("%w (name another with --control PATH, --config FILE or --pid PID)", err)
	}
	if err != nil {
		fail(stderr, c.Name, err)
		return exitFailed
	}
	return exitOK
}

// statusCmd is `baton status`: the running baton and its workers, as a
// table (redrawn every second with --watch) or JSON.
func statusCmd(c *control.Command, args []string, stdout, stderr io.Writer) int {
	fs, t := commandFlags("baton "+c.Name, stderr)
	asJSON := fs.Bool("json", false, "print the status as JSON (schema: docs/control.md)")
	watch := fs.Bool("watch", false, "redraw the table every second until interrupted")
	usage(fs, c, c.Usage, stderr)
	if code, ok := parse(fs, c, t, &control.Request{}, args, stderr); !ok {
		return code
	}
	if *asJSON && *watch {
		fail(stderr, c.Name, errors.New("--json and --watch do not go together: pick one"))
		return exitUsage
	}
	get := func() (*control.Status, int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, code, err := t.request(ctx, control.Request{Command: c.Name})
		if err == nil && resp.Status == nil {
			err, code = errors.New("the baton sent no status (an older version?)"), exitFailed
		}
		return resp.Status, code, err
	}
	st, code, err := get()
	if err != nil {
		fail(stderr, c.Name, err)
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
	var prev *control.Status
	redraw := isTerminal(stdout)
	for clear := "\x1b[2J"; ; clear = "" {
		var b strings.Builder
		if redraw {
			// Home, draw, clear what the last frame left below.
			b.WriteString("\x1b[H" + clear)
			console.Table(&b, st, prev, st.At)
			b.WriteString("\x1b[J")
		} else {
			// A pipe or a file gets plain snapshots, a blank line apart.
			console.Table(&b, st, prev, st.At)
			b.WriteString("\n")
		}
		frame := b.String()
		if redraw {
			frame = strings.ReplaceAll(frame, "\n", "\x1b[K\n")
		}
		if _, err := io.WriteString(stdout, frame); err != nil {
			return exitFailed
		}
		select {
		case <-stop:
			return exitOK
		case <-tick.C:
		}
		next, code, err := get()
		if err != nil {
			fail(stderr, c.Name, err)
			return code
		}
		prev, st = st, next
	}
}

// isTerminal reports whether w is a terminal, which --watch redraws in
// place; anything else gets plain snapshots.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// client finds the control socket of the baton t names, the way sourceOf
// says, and says whether it was named or found by looking around (then
// only a baton of this user is asked).
func (t *target) client() (control.Client, error) {
	n := naming{control: t.control, config: t.config, pid: t.pid, service: t.service, envSocket: os.Getenv("BATON_SOCKET"), runtimeDir: control.SystemdRuntimeDir()}
	if err := conflict(n); err != nil {
		return control.Client{}, err
	}
	if n.control == "" && n.config != "" {
		c, err := config.Load(n.config)
		if err != nil {
			return control.Client{}, err
		}
		n.configSocket = c.Control.Socket
	}
	uid := os.Geteuid()
	switch sourceOf(n) {
	case fromControl:
		return control.Client{Path: n.control}, nil
	case fromConfig:
		return control.Client{Path: n.configSocket}, nil
	case fromEnv:
		return control.Client{Path: n.envSocket}, nil
	case fromRuntimeDir:
		return control.Client{Path: filepath.Join(n.runtimeDir, control.SocketName)}, nil
	case fromPID:
		b, err := control.InstanceOf(n.pid, uid)
		return control.Client{Path: b.Control, Own: true}, err
	case fromService:
		var candidates []string
		for _, root := range control.ServiceRunRoots() {
			candidates = append(candidates, control.ServiceSocket(root, n.service))
		}
		path, err := serviceSocket(n.service, candidates, isSocket)
		return control.Client{Path: path}, err
	}
	found := control.Running(uid)
	if n.config != "" {
		found = startedWith(found, n.config)
	}
	b, err := choose(found, n.config, uid)
	return control.Client{Path: b.Control, Own: true}, err
}

// isSocket reports whether path is a socket.
func isSocket(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// startedWith keeps the batons of found whose --config is the file at
// path: the same file (device and inode), however each names it.
func startedWith(found []control.Instance, path string) []control.Instance {
	want, err := os.Stat(path)
	if err != nil {
		return nil
	}
	var out []control.Instance
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
func logLine(l control.LogLine) string {
	cut := ""
	if l.Cut {
		cut = " [cut]"
	}
	return fmt.Sprintf("%s [worker %d pid %d %s] %s%s", l.Time.Format("2006-01-02T15:04:05.000Z07:00"), l.Slot, l.PID, console.Printable(l.Stream), console.Printable(l.Line), cut)
}
