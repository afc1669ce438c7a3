package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/excerpt"
	"github.com/batonhq/baton/internal/lifecycle"
	"github.com/batonhq/baton/internal/linering"
	"github.com/batonhq/baton/internal/spawn"
	"github.com/batonhq/baton/internal/unixsock"
)

// ControlSocketName is the control socket's file name in the runtime
// directory.
const ControlSocketName = "baton.sock"

// Bounds on the control socket, so that its clients (root and baton's own
// user: the socket is 0600) cannot make baton run out of descriptors or
// memory, or hold it up.
const (
	// maxControlRequest bounds one request line.
	maxControlRequest = 4 << 10
	// maxControlConns is how many connections are served at once; one
	// more is answered "busy" and closed at once.
	maxControlConns = 64
	// controlReadTimeout is how long a client has to send its request,
	// controlWriteTimeout to take the answer.
	controlReadTimeout  = 5 * time.Second
	controlWriteTimeout = time.Second
)

// ControlRequest is one request on the control socket: a JSON object on
// one line.
type ControlRequest struct {
	// Command is "reload" (wait for a reload's outcome), "upgrade" (wait
	// for a self-upgrade's), "stats", "status", "scale", "restart" or
	// "stop" (each waits for its outcome).
	Command string `json:"command"`
	// Workers is scale's count: "N", "+N" or "-N".
	Workers string `json:"workers,omitempty"`
	// Slot is restart's slot.
	Slot *int `json:"slot,omitempty"`
	// Lines is how many of the last lines logs sends (absent:
	// DefaultLogLines); Follow: then every new line until the client
	// closes.
	Lines  *int `json:"lines,omitempty"`
	Follow bool `json:"follow,omitempty"`
	// Now: stop drains at once, without stop.delay (or the rest of it).
	Now bool `json:"now,omitempty"`
}

// ControlResponse answers a ControlRequest, as one JSON line.
type ControlResponse struct {
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

	// streamed: the answer was written already (logs).
	streamed bool
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

// Bounds of `logs`: followers hold a connection each, so that at most
// maxFollowers of the maxControlConns do.
const (
	DefaultLogLines = 15
	maxLogLines     = 10000
	maxFollowers    = 16
)

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

type controlServer struct {
	path    string
	ln      *net.UnixListener
	once    sync.Once
	passKey string // its name for the upgrader, "" if not registered
	ring    *linering.Ring
	// read answers stats and status; it runs on the loop.
	read func(command string) ControlResponse
	// refused counts the connections of peers that may not control
	// this baton; followers are the logs clients following now.
	refused   atomic.Int64
	followers atomic.Int32
}

// openControl returns the control socket at path: the one the parent
// passed when it is at the same path (a successor answers where its
// predecessor did), else a new one. It is registered with the upgrader.
func (s *supervisor) openControl(path string, note *upgradeNote) (*controlServer, error) {
	if note != nil && note.Control == path && note.ControlKey != "" {
		fd, err := s.upg.Take(note.ControlKey)
		if err == nil && fd < 0 {
			err = errors.New("the previous baton did not pass it")
		}
		if err != nil {
			return nil, fmt.Errorf("supervisor: control socket: %w", err)
		}
		f := os.NewFile(uintptr(fd), path)
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("supervisor: control socket from the previous baton: %w", err)
		}
		c := &controlServer{path: path, ln: ln.(*net.UnixListener), passKey: note.ControlKey}
		c.ln.SetUnlinkOnClose(false)
		return c, nil // the upgrader holds it already
	}
	// One passed but not taken (it was elsewhere) is closed by the
	// upgrader when this one is Ready.
	c, err := listenControl(path)
	if err != nil {
		return nil, err
	}
	if s.upg != nil {
		// A key of its own: the upgrader would leak a passed copy that a
		// new registration under its key replaced.
		c.passKey = "control-" + strconv.Itoa(os.Getpid())
		fd, err := spawn.DupFd(c.ln)
		if err == nil {
			err = s.upg.Add(c.passKey, fd)
			unix.Close(fd)
		}
		if err != nil {
			c.close(false)
			return nil, fmt.Errorf("supervisor: control socket: %w", err)
		}
	}
	return c, nil
}

func listenControl(path string) (*controlServer, error) {
	if err := removeStaleSocket(path); err != nil {
		return nil, fmt.Errorf("supervisor: control socket: %w", err)
	}
	// Only the service's own user may reload or stop it: the socket is
	// owner-only from the moment it exists. Its path is removed by close,
	// not by every process holding a copy.
	ln, err := unixsock.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("supervisor: control socket: %w", err)
	}
	return &controlServer{path: path, ln: ln}, nil
}

// refuse says why conn's peer may not control this baton, "" if it may:
// only root and baton's own user may (the socket is 0600, but a careless
// chmod, or a directory another user can reach, must not hand control
// over). Each refusal is counted.
func (c *controlServer) refuse(conn *net.UnixConn) string {
	uid, err := peerUID(conn)
	switch {
	case err != nil:
		c.refused.Add(1)
		return fmt.Sprintf("control: refused: cannot tell who is asking: %v", err)
	case uid != 0 && uid != os.Geteuid():
		c.refused.Add(1)
		return fmt.Sprintf("control: refused: uid %d may not control this baton (only root and uid %d may)", uid, os.Geteuid())
	}
	return ""
}

// peerUID returns the uid of the process at the other end, as the kernel
// recorded it when it connected (SO_PEERCRED).
func peerUID(conn *net.UnixConn) (int, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if serr != nil {
		return -1, os.NewSyscallError("getsockopt SO_PEERCRED", serr)
	}
	return int(cred.Uid), nil
}

// close stops accepting; the socket file is removed unless keepPath
// (another supervisor answers on it).
func (c *controlServer) close(keepPath bool) {
	c.once.Do(func() {
		c.ln.Close()
		if !keepPath {
			os.Remove(c.path)
		}
	})
}

// serve accepts until the listener is closed. Each connection is one
// request and one response.
func (c *controlServer) serve(post func(any), quit <-chan struct{}) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxControlConns)
	var delay time.Duration
	for {
		conn, err := c.ln.AcceptUnix()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// EMFILE and the like pass: back off, as net/http does,
			// rather than stop answering for good.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
				continue
			case <-quit:
				return
			}
		}
		delay = 0
		if why := c.refuse(conn); why != "" {
			writeResponse(conn, ControlResponse{Error: why})
			conn.Close()
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			// Refused at once: waiting behind idle clients would take
			// minutes, and the answer says why.
			writeResponse(conn, ControlResponse{Error: fmt.Sprintf("control: busy: %d requests are being served; try again", maxControlConns)})
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			defer conn.Close()
			// An idle client must not hold up baton's exit, but an
			// answer given just before it (a self-upgrade's) still goes
			// out.
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				select {
				case <-quit:
					conn.SetDeadline(time.Now().Add(time.Second))
				case <-stop:
				}
			}()
			if r := handleControl(conn, post, quit, c.read, c.ring, &c.followers); !r.streamed {
				writeResponse(conn, r)
			}
		}()
	}
}

func handleControl(conn net.Conn, post func(any), quit <-chan struct{}, read func(string) ControlResponse, ring *linering.Ring, followers *atomic.Int32) ControlResponse {
	conn.SetReadDeadline(time.Now().Add(controlReadTimeout))
	line, err := bufio.NewReaderSize(conn, maxControlRequest).ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return ControlResponse{Error: fmt.Sprintf("control: request longer than %d bytes", maxControlRequest)}
	case err != nil && len(line) == 0:
		return ControlResponse{Error: "control: no request (want one JSON line)"}
	}
	req, err := parseRequest(line)
	if err != nil {
		return ControlResponse{Error: err.Error()}
	}
	// The reply channel is buffered: the loop never blocks on it.
	reply := make(chan ControlResponse, 1)
	switch req.Command {
	case "stats", "status":
		post(loopCall{do: func() { reply <- read(req.Command) }})
	case "reload", "upgrade":
		post(lifecycle.Reload{Upgrade: req.Command == "upgrade", Reply: answerWith(reply)})
	case "scale":
		n, rel, _ := parseScale(req.Workers)
		post(lifecycle.Scale{N: n, Relative: rel, Reply: answerWith(reply)})
	case "restart":
		post(lifecycle.Restart{Slot: *req.Slot, Reply: answerWith(reply)})
	case "stop":
		post(lifecycle.Stop{Now: req.Now, Reply: answerWith(reply)})
	case "logs":
		streamLogs(conn, ring, followers, req, quit)
		return ControlResponse{streamed: true}
	}
	r, ok := receive(reply, quit)
	if !ok {
		return ControlResponse{Error: "control: baton stopped"}
	}
	return r
}

// parseRequest decodes and checks one request line: an error says, in
// one line, what is wrong with it.
func parseRequest(line []byte) (ControlRequest, error) {
	var req ControlRequest
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("control: bad request: %s", oneLine(err.Error()))
	}
	if rest := bytes.TrimSpace(line[dec.InputOffset():]); len(rest) > 0 {
		return req, fmt.Errorf("control: bad request: %s after the JSON object (want one object on one line)", excerpt.Quote(string(rest)))
	}
	switch req.Command {
	case "stats", "status", "reload", "upgrade", "stop":
	case "scale":
		if _, _, err := parseScale(req.Workers); err != nil {
			return req, fmt.Errorf("control: scale: %w", err)
		}
	case "restart":
		if req.Slot == nil {
			return req, errors.New(`control: restart: no "slot" (want {"command":"restart","slot":N})`)
		}
	case "logs":
		if l := req.Lines; l != nil && (*l < 0 || *l > maxLogLines) {
			return req, fmt.Errorf("control: logs: lines %d: want 0 to %d", *l, maxLogLines)
		}
	default:
		return req, fmt.Errorf("control: unknown command %s (want reload, upgrade, stats, status, scale, restart, stop or logs)", excerpt.Quote(req.Command))
	}
	return req, nil
}

// oneLine keeps an error message on one line.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// streamLogs answers logs: the last lines, one response each, then with
// Follow every new line until the client closes its end or baton stops.
// A client that does not read within the write timeout is cut off; one
// that reads slowly loses lines, and is told how many.
func streamLogs(conn net.Conn, ring *linering.Ring, followers *atomic.Int32, req ControlRequest, quit <-chan struct{}) {
	n := DefaultLogLines
	if req.Lines != nil {
		n = *req.Lines
	}
	// Every write has the write timeout: one the buffer makes when full
	// too, so a client that does not read loses its connection (and its
	// slot) within it.
	bw := bufio.NewWriter(conn)
	failed := false
	send := func(l linering.Line, dropped int) {
		if failed {
			return
		}
		b, _ := json.Marshal(ControlResponse{OK: true, Log: &LogLine{Time: l.Time, Slot: l.Slot, PID: l.PID, Stream: l.Stream,
			Line: l.Text, Cut: l.Cut, Dropped: dropped}})
		conn.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
		_, err := bw.Write(append(b, '\n'))
		failed = err != nil
	}
	flush := func() bool {
		if failed {
			return false
		}
		conn.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
		return bw.Flush() == nil
	}
	if !req.Follow {
		for _, l := range ring.Last(n) {
			send(l, 0)
		}
		flush()
		return
	}
	if followers.Add(1) > maxFollowers {
		followers.Add(-1)
		writeResponse(conn, ControlResponse{Error: fmt.Sprintf("control: logs: %d clients follow already; try again later", maxFollowers)})
		return
	}
	defer followers.Add(-1)
	last, f := ring.Follow(n)
	defer f.Close()
	for _, l := range last {
		send(l, 0)
	}
	if !flush() {
		return
	}
	// The client says it is done by closing its end.
	gone := make(chan struct{})
	conn.SetReadDeadline(time.Time{})
	go func() {
		defer close(gone)
		io.Copy(io.Discard, io.LimitReader(conn, maxControlRequest))
	}()
	for {
		select {
		case l := <-f.Lines():
			send(l, f.Dropped())
			// Take what else is there before writing.
			for more := true; more; {
				select {
				case l := <-f.Lines():
					send(l, f.Dropped())
				default:
					more = false
				}
			}
			if !flush() {
				return
			}
		case <-gone:
			return
		case <-quit:
			return
		}
	}
}

// receive waits for c until quit is closed, and a moment more: the loop
// may answer and end at once, the answer still on its way.
func receive[T any](c <-chan T, quit <-chan struct{}) (T, bool) {
	select {
	case v := <-c:
		return v, true
	case <-quit:
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case v := <-c:
			return v, true
		case <-t.C:
			var zero T
			return zero, false
		}
	}
}

// writeResponse sends r; a client that does not read it (the answer fits
// in the socket's buffer) costs at most the write timeout.
func writeResponse(conn net.Conn, r ControlResponse) {
	conn.SetWriteDeadline(time.Now().Add(controlWriteTimeout))
	b, _ := json.Marshal(r)
	conn.Write(append(b, '\n'))
}

// answerWith returns a Reply that answers on c (buffered: the loop never
// blocks on it).
func answerWith(c chan<- ControlResponse) func(lifecycle.Result) {
	return func(r lifecycle.Result) { c <- resultResponse(r) }
}

// parseScale reads scale's count: "N" (that many), "+N" or "-N" (that
// many more or fewer).
func parseScale(s string) (n int, relative bool, err error) {
	relative = strings.HasPrefix(s, "+") || strings.HasPrefix(s, "-")
	n, err = strconv.Atoi(s)
	if err != nil || s == "" {
		return 0, false, fmt.Errorf("workers %s: want N, +N or -N", excerpt.Quote(s))
	}
	return n, relative, nil
}

// resultResponse is an outcome as the control protocol says it.
func resultResponse(r lifecycle.Result) ControlResponse {
	resp := ControlResponse{OK: r.Err == nil, Generation: r.Generation, Workers: r.Workers, Seconds: r.Took.Seconds(),
		Upgraded: r.Upgraded, PID: r.PID}
	if r.Err != nil {
		resp.Error = r.Err.Error()
	}
	return resp
}

func (s *supervisor) stats() *Stats {
	snap := s.m.Snapshot()
	st := &Stats{
		PID:         os.Getpid(),
		Version:     s.version,
		Goroutines:  runtime.NumGoroutine(),
		Generation:  snap.Generation,
		Workers:     snap.Workers,
		Draining:    snap.Draining,
		Restarts:    snap.Restarts,
		Reloading:   snap.Reloading,
		NotifyDrops: int64(snap.NotifyDrops) + s.fromWorkers.Malformed(),
	}
	st.OutputDrops = s.outputDropped()
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		st.FDs = len(ents)
	}
	st.RSSKB = int(processRSS(os.Getpid()) >> 10)
	if at := s.trimmed.Load(); at != 0 {
		st.Trimmed = time.Unix(0, at)
	}
	st.ControlRefused = s.control.refused.Load()
	return st
}

// ErrNoAnswer is wrapped by Request's error when no baton listens at the
// path.
var ErrNoAnswer = errors.New("supervisor: control socket: no baton answers")

// outputDropped counts the output lines dropped, on the way to stderr or
// to journald. Safe outside the loop.
func (s *supervisor) outputDropped() int64 {
	var n int64
	if d, ok := s.out.w.(interface{ Dropped() int64 }); ok {
		n = d.Dropped()
	}
	if s.journal != nil {
		n += s.journal.dropped.Load()
	}
	return n
}

// Client asks a baton over its control socket.
type Client struct {
	// Path is the control socket.
	Path string
	// Own is set when the socket was found by looking around rather than
	// named by the caller: then it is asked only if the caller's own uid
	// listens on it, so that no other user's process answers in a
	// baton's place.
	Own bool
}

// dial connects to the control socket, checking its owner if Own.
func (c Client) dial(ctx context.Context) (*net.UnixConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Path)
	if err != nil {
		return nil, fmt.Errorf("%w on %s: %w", ErrNoAnswer, c.Path, err)
	}
	uc := conn.(*net.UnixConn)
	if c.Own {
		if err := checkOwner(uc, c.Path, os.Geteuid()); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return uc, nil
}

// Request sends one request to the control socket at path, which the
// caller named, and waits for the answer: Client.Request.
func Request(ctx context.Context, path string, req ControlRequest) (ControlResponse, error) {
	return Client{Path: path}.Request(ctx, req)
}

// Request sends one request and waits for the answer (a reload's comes
// when it is over), bounded by ctx.
func (c Client) Request(ctx context.Context, req ControlRequest) (ControlResponse, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return ControlResponse{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	b, _ := json.Marshal(req)
	_, werr := conn.Write(append(b, '\n'))
	// A refusal (busy, or not allowed) may come, and the connection
	// close, before the request is written: its answer is still there.
	var resp ControlResponse
	br := bufio.NewReader(conn)
	if err := json.NewDecoder(br).Decode(&resp); err != nil {
		if werr != nil {
			return resp, fmt.Errorf("supervisor: control socket: %w", werr)
		}
		if ctx.Err() != nil {
			return resp, fmt.Errorf("supervisor: control socket: no answer: %w", ctx.Err())
		}
		return resp, fmt.Errorf("supervisor: control socket: %w", err)
	}
	// baton closes the connection after its answer: once that is seen,
	// the request holds none of baton's descriptors (which a request
	// that follows at once may be counting).
	io.Copy(io.Discard, io.LimitReader(br, maxControlRequest))
	if !resp.OK && resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// Logs sends req (a logs request) and calls each for every line of the
// answer, until it ends (at once without Follow; with it, when baton
// stops) or ctx is done, which is no error.
func (c Client) Logs(ctx context.Context, req ControlRequest, each func(LogLine)) error {
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	req.Command = "logs"
	b, _ := json.Marshal(req)
	_, werr := conn.Write(append(b, '\n'))
	dec := json.NewDecoder(bufio.NewReader(conn))
	for {
		var resp ControlResponse
		err := dec.Decode(&resp)
		switch {
		case errors.Is(err, io.EOF) || err != nil && ctx.Err() != nil:
			return nil
		case err != nil && werr != nil:
			return fmt.Errorf("supervisor: control socket: %w", werr)
		case err != nil:
			return fmt.Errorf("supervisor: control socket: %w", err)
		case !resp.OK:
			return errors.New(resp.Error)
		case resp.Log != nil:
			each(*resp.Log)
		}
	}
}
