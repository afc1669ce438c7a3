package control

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/batonhq/baton/internal/excerpt"
	"github.com/batonhq/baton/internal/lifecycle"
)

// Command is one command of the control protocol, and of the command
// line when it has a Summary.
type Command struct {
	// Name is the request's "command" and the word after `baton`.
	Name string
	// Summary is its line in `baton`'s usage; "" for a command of the
	// protocol only, which `baton NAME` does not run.
	Summary string
	// Usage is what `baton NAME` takes besides the flags that name the
	// baton (and an outcome's --timeout), as its usage line shows it;
	// Help is what `baton NAME -h` says it does.
	Usage, Help string
	// Arg, if not nil, takes `baton NAME`'s one argument (a number may
	// be negative) into the request; Flags adds the flags of its own
	// that go into the request.
	Arg   func(req *Request, arg string) error
	Flags func(fs *flag.FlagSet, req *Request)
	// Check says what is wrong with a request, nil if nothing is; the
	// server refuses it with "control: NAME: " and the error.
	Check func(Request) error

	// How baton answers: Event, an outcome, is posted to the Machine,
	// whose Result is the answer once it is over, and `baton NAME`
	// prints Print's line; Read answers at once, on the loop, from
	// baton's state. With neither, the answer is the workers' lines
	// (logs).
	Event func(req Request, reply func(lifecycle.Result)) lifecycle.Event
	Print func(Response) string
	Read  func(State) Response
	// View is how `baton NAME` shows a read or the lines: cmd/baton's
	// status table or its log lines.
	View View
}

// View is how `baton NAME` shows an answer that is not an outcome.
type View int

const (
	// Outcome: the line Print makes of the answer.
	Outcome View = iota
	// Table: the status as a table, as JSON, or redrawn (--watch).
	Table
	// Lines: the workers' lines, followed with -f.
	Lines
)

// State is what a read command answers from: the running baton.
type State interface {
	Stats() *Stats
	Status() *Status
}

// Commands is the control protocol, in the order `baton`'s usage and
// docs/control.md list it.
var Commands = []*Command{{
	Name:    "reload",
	Summary: "reload a running baton and wait for the outcome",
	Help:    "Starts a new generation of workers and waits: exit 0 once it serves, 1 if the reload failed or was rolled back (the old workers still serve). When the baton executable on disk was replaced, the reload is a self-upgrade.",
	Event: func(_ Request, reply func(lifecycle.Result)) lifecycle.Event {
		return lifecycle.Reload{Reply: reply}
	},
	Print: func(r Response) string {
		switch {
		case r.Upgraded && r.Generation == 0:
			// The new baton answers elsewhere (its control socket moved).
			return fmt.Sprintf("reload ok: upgraded to baton pid %d (%.2fs)", r.PID, r.Seconds)
		case r.Upgraded:
			return fmt.Sprintf("reload ok: upgraded to baton pid %d, generation %d serving with %d workers (%.2fs)", r.PID, r.Generation, r.Workers, r.Seconds)
		}
		return fmt.Sprintf("reload ok: generation %d serving with %d workers (%.2fs)", r.Generation, r.Workers, r.Seconds)
	},
}, {
	Name:    "upgrade",
	Summary: "replace a running baton by the executable on disk, sockets kept open",
	Help:    "Starts a new baton from the executable on disk, which takes over every socket and starts its own workers, and waits: exit 0 once it serves (the old baton then drains and exits), 1 if it failed (the old baton and its workers still serve).",
	Event: func(_ Request, reply func(lifecycle.Result)) lifecycle.Event {
		return lifecycle.Reload{Upgrade: true, Reply: reply}
	},
	Print: func(r Response) string {
		if r.Upgraded && r.Generation == 0 {
			return fmt.Sprintf("upgrade ok: upgraded to baton pid %d (%.2fs)", r.PID, r.Seconds)
		}
		return fmt.Sprintf("upgrade ok: baton pid %d serving generation %d with %d workers (%.2fs)", r.PID, r.Generation, r.Workers, r.Seconds)
	},
}, {
	Name: statsName,
	Read: func(s State) Response { return Response{OK: true, Stats: s.Stats()} },
}, {
	Name:    "status",
	Summary: "show a running baton and its workers (--json, --watch)",
	Usage:   "[--json | --watch]",
	Help:    "Shows baton (pid, version, uptime, generation, listeners, restart budget, last reload) and a row per worker: slot, pid, generation, state, uptime, restarts of its slot, cpu, memory, its last STATUS=.",
	Read:    func(s State) Response { return Response{OK: true, Status: s.Status()} },
	View:    Table,
}, {
	Name:    "logs",
	Summary: "the workers' last output lines (-f follows, -n N, --slot N, --stream S, --json)",
	Usage:   "[-f] [-n N] [--slot N] [--stream stdout|stderr] [--json]",
	Help:    "Prints the workers' last output lines, each with its time, slot, pid and stream, from the ring baton keeps (1 MiB; lines cut at 4 KiB); with --slot or --stream, only that slot's or stream's.",
	Flags: func(fs *flag.FlagSet, req *Request) {
		fs.Func("slot", "only the lines of the worker of slot `N` (see baton status), of every generation", func(s string) error {
			n, err := strconv.Atoi(s)
			if err != nil {
				return errors.New("want a slot number, as baton status shows it")
			}
			req.Slot = &n
			return nil
		})
		fs.StringVar(&req.Stream, "stream", "", "only the lines of `stream` stdout or stderr")
	},
	Check: func(req Request) error {
		if l := req.Lines; l != nil && (*l < 0 || *l > MaxLogLines) {
			return fmt.Errorf("lines %d: want 0 to %d (baton keeps no more)", *l, MaxLogLines)
		}
		if req.Slot != nil && *req.Slot < 0 {
			return fmt.Errorf("slot %d: want a slot number, 0 or more, as baton status shows it", *req.Slot)
		}
		if req.Stream != "" && req.Stream != "stdout" && req.Stream != "stderr" {
			return fmt.Errorf("stream %s: want stdout or stderr", excerpt.Quote(req.Stream))
		}
		return nil
	},
	View: Lines,
}, {
	Name:    "scale",
	Summary: "set the number of workers: baton scale 4, +1, -1",
	Usage:   "N|+N|-N",
	Help:    "Sets the number of workers: new ones start and are waited for until ready; the extras drain, as on a reload. The count holds across reloads and self-upgrades until the configuration's worker.count changes or you scale again.",
	Arg: func(req *Request, arg string) error {
		req.Workers = arg
		_, _, err := parseScale(arg)
		return err
	},
	Check: func(req Request) error {
		_, _, err := parseScale(req.Workers)
		return err
	},
	Event: func(req Request, reply func(lifecycle.Result)) lifecycle.Event {
		n, relative, _ := parseScale(req.Workers)
		return lifecycle.Scale{N: n, Relative: relative, Reply: reply}
	},
	Print: func(r Response) string {
		return fmt.Sprintf("scale ok: generation %d serving with %d workers", r.Generation, r.Workers)
	},
}, {
	Name:    "restart",
	Summary: "replace one worker, new first: baton restart SLOT",
	Usage:   "SLOT",
	Help:    "Replaces the worker of SLOT (see baton status): a new one starts, and once it is ready the old one drains.",
	Arg: func(req *Request, arg string) error {
		slot, err := strconv.Atoi(arg)
		if err != nil || slot < 0 {
			return fmt.Errorf("slot %s: want a slot number, as baton status shows it (baton restart 0)", excerpt.Quote(arg))
		}
		req.Slot = &slot
		return nil
	},
	Check: func(req Request) error {
		if req.Slot == nil {
			return errors.New(`no "slot" (want {"command":"restart","slot":N})`)
		}
		return nil
	},
	Event: func(req Request, reply func(lifecycle.Result)) lifecycle.Event {
		return lifecycle.Restart{Slot: *req.Slot, Reply: reply}
	},
	Print: func(r Response) string {
		return fmt.Sprintf("restart ok: generation %d serving with %d workers", r.Generation, r.Workers)
	},
}, {
	Name:    "stop",
	Summary: "drain every worker and stop baton, waiting until it has",
	Usage:   "[--now]",
	Help:    "Stops baton as SIGTERM does (after stop.delay, every worker drains) and waits until it has.",
	Flags: func(fs *flag.FlagSet, req *Request) {
		fs.BoolVar(&req.Now, "now", false, "drain at once, without stop.delay (or the rest of it)")
	},
	Event: func(req Request, reply func(lifecycle.Result)) lifecycle.Event {
		return lifecycle.Stop{Now: req.Now, Reply: reply}
	},
	Print: func(Response) string { return "stop ok: every worker drained, baton exited" },
}}

// statsName is the one command baton sends itself (Client.Stats: to the
// successor of a self-upgrade).
const statsName = "stats"

// Lookup returns the command named name, nil if there is none.
func Lookup(name string) *Command {
	for _, c := range Commands {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// names lists the commands for an error: "a, b or c".
func names() string {
	all := make([]string, len(Commands))
	for i, c := range Commands {
		all[i] = c.Name
	}
	return strings.Join(all[:len(all)-1], ", ") + " or " + all[len(all)-1]
}
