package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/excerpt"
	"github.com/batonhq/baton/internal/lifecycle"
)

// SocketName is the control socket's file name in the runtime directory.
const SocketName = "baton.sock"

// Bounds on the control socket, so that its clients (root and baton's own
// user: the socket is 0600) cannot make baton run out of descriptors or
// memory, or hold it up.
const (
	// MaxRequest bounds one request line.
	MaxRequest = 4 << 10
	// MaxConns is how many connections are served at once; one more is
	// answered "busy" and closed at once.
	MaxConns = 64
	// readTimeout is how long a client has to send its request,
	// writeTimeout to take the answer.
	readTimeout  = 5 * time.Second
	writeTimeout = time.Second
)

// Bounds of `logs`: followers hold a connection each, so that at most
// maxFollowers of the MaxConns do.
const (
	DefaultLogLines = 15
	MaxLogLines     = 10000
	maxFollowers    = 16
)

// Request is one request on the control socket: a JSON object on one
// line.
type Request struct {
	// Command is the name of one of Commands.
	Command string `json:"command"`
	// Workers is scale's count: "N", "+N" or "-N".
	Workers string `json:"workers,omitempty"`
	// Slot is restart's slot; for logs, the one slot whose lines are
	// sent (absent: every slot's).
	Slot *int `json:"slot,omitempty"`
	// Stream, for logs, is "stdout" or "stderr": only that stream's
	// lines (absent: both).
	Stream string `json:"stream,omitempty"`
	// Lines is how many of the last lines logs sends (absent:
	// DefaultLogLines); Follow: then every new line until the client
	// closes.
	Lines  *int `json:"lines,omitempty"`
	Follow bool `json:"follow,omitempty"`
	// Now: stop drains at once, without stop.delay (or the rest of it).
	Now bool `json:"now,omitempty"`
}

// Response answers a Request, as one JSON line.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Reload and upgrade.
	Generation int     `json:"generation,omitempty"`
	Workers    int     `json:"workers,omitempty"`
	Seconds    float64 `json:"seconds,omitempty"`
	// Upgraded is set when a new baton process took over; PID is its pid.
	Upgraded bool `json:"upgraded,omitempty"`
	PID      int  `json:"pid,omitempty"`
	// Stats and Status.
	Stats  *Stats  `json:"stats,omitempty"`
	Status *Status `json:"status,omitempty"`
	// Log is one line of `logs`, which answers with one response per
	// line.
	Log *LogLine `json:"log,omitempty"`
}

// LogLine is a line a worker wrote.
type LogLine struct {
	Time   time.Time `json:"time"`
	Slot   int       `json:"slot"`
	PID    int       `json:"pid"`
	Stream string    `json:"stream"` // stdout or stderr
	Line   string    `json:"line"`
	// Cut: the line was longer, and only its start is kept.
	Cut bool `json:"cut,omitempty"`
	// Dropped counts the lines lost before this one because the client
	// did not read fast enough.
	Dropped int `json:"dropped,omitempty"`
}

// Stats are baton's own resource counts, for leak checks and monitoring.
type Stats struct {
	PID        int    `json:"pid"`
	Version    string `json:"version"`
	FDs        int    `json:"fds"`
	Goroutines int    `json:"goroutines"`
	RSSKB      int    `json:"rss_kb"`
	// Trimmed is when baton last gave back the memory a burst of work
	// left resident (docs/architecture.md, "Memory"); zero before.
	Trimmed     time.Time `json:"trimmed,omitzero"`
	Generation  int       `json:"generation"`
	Workers     int       `json:"workers"`  // live worker processes, draining ones included
	Draining    int       `json:"draining"` // generations draining
	Restarts    int       `json:"restarts"`
	Reloading   bool      `json:"reloading"`
	NotifyDrops int64     `json:"notify_dropped"`
	// OutputDrops counts output lines (baton's and the workers') dropped
	// because baton's standard error was not read fast enough, or its
	// reader had gone.
	OutputDrops int64 `json:"output_dropped"`
	// ControlRefused counts control connections refused because their
	// peer was neither root nor baton's own user.
	ControlRefused int64 `json:"control_refused"`
}

// ParseRequest decodes and checks one request line, and returns the
// command it names: an error says, in one line, what is wrong with it.
func ParseRequest(line []byte) (Request, *Command, error) {
	var req Request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, nil, fmt.Errorf("control: bad request: %s", oneLine(err.Error()))
	}
	if rest := bytes.TrimSpace(line[dec.InputOffset():]); len(rest) > 0 {
		return req, nil, fmt.Errorf("control: bad request: %s after the JSON object (want one object on one line)", excerpt.Quote(string(rest)))
	}
	c := Lookup(req.Command)
	if c == nil {
		return req, nil, fmt.Errorf("control: unknown command %s (want %s)", excerpt.Quote(req.Command), names())
	}
	if c.Check != nil {
		if err := c.Check(req); err != nil {
			return req, nil, fmt.Errorf("control: %s: %w", c.Name, err)
		}
	}
	return req, c, nil
}

// oneLine keeps an error message on one line.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// resultResponse is an outcome as the control protocol says it.
func resultResponse(r lifecycle.Result) Response {
	resp := Response{OK: r.Err == nil, Generation: r.Generation, Workers: r.Workers, Seconds: r.Took.Seconds(),
		Upgraded: r.Upgraded, PID: r.PID}
	if r.Err != nil {
		resp.Error = r.Err.Error()
	}
	return resp
}

// parseScale reads scale's count: "N" (that many, 1 to
// config.MaxWorkers), "+N" or "-N" (that many more or fewer: whether
// that is too many or too few depends on the workers running, which the
// Machine knows).
func parseScale(s string) (n int, relative bool, err error) {
	relative = strings.HasPrefix(s, "+") || strings.HasPrefix(s, "-")
	n, err = strconv.Atoi(s)
	switch {
	case err != nil || s == "":
		return 0, false, fmt.Errorf("%s is not a count of workers: want N, +N or -N (baton scale 4, +1 or -1)", excerpt.Quote(s))
	case !relative && n < 1:
		return 0, false, fmt.Errorf("%d workers: baton keeps 1 to %d (baton stop stops it)", n, config.MaxWorkers)
	case !relative && n > config.MaxWorkers:
		return 0, false, fmt.Errorf("%d workers: baton keeps 1 to %d", n, config.MaxWorkers)
	}
	return n, relative, nil
}
