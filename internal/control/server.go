package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonhq/baton/internal/lifecycle"
	"github.com/batonhq/baton/internal/linering"
)

// Server answers the control socket: one request and one answer per
// connection (a line per log line for logs), each dispatched by its row
// of Commands. It keeps no state of baton's: what it answers from comes
// through its fields.
type Server struct {
	// Post hands an outcome's event to the loop that owns the Machine;
	// OnLoop runs a read there, from State.
	Post   func(lifecycle.Event)
	OnLoop func(func())
	State  State
	// Ring holds the workers' lines logs sends.
	Ring *linering.Ring
	// refused counts the connections of peers that may not control
	// this baton; followers are the logs clients following now.
	refused   atomic.Int64
	followers atomic.Int32
}

// Refused counts the connections refused because their peer was neither
// root nor baton's own user.
func (s *Server) Refused() int64 { return s.refused.Load() }

// Serve accepts on ln until it is closed; quit tells an idle client and
// a follower that baton stops.
func (s *Server) Serve(ln *net.UnixListener, quit <-chan struct{}) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, MaxConns)
	var delay time.Duration
	for {
		conn, err := ln.AcceptUnix()
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
		if why := s.refuse(conn); why != "" {
			writeResponse(conn, Response{Error: why})
			conn.Close()
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			// Refused at once: waiting behind idle clients would take
			// minutes, and the answer says why.
			writeResponse(conn, Response{Error: fmt.Sprintf("control: busy: %d requests are being served; try again", MaxConns)})
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
			if r, streamed := s.handle(conn, quit); !streamed {
				writeResponse(conn, r)
			}
		}()
	}
}

// refuse says why conn's peer may not control this baton, "" if it may:
// only root and baton's own user may (the socket is 0600, but a careless
// chmod, or a directory another user can reach, must not hand control
// over). Each refusal is counted.
func (s *Server) refuse(conn *net.UnixConn) string {
	uid, err := peerUID(conn)
	switch {
	case err != nil:
		s.refused.Add(1)
		return fmt.Sprintf("control: refused: cannot tell who is asking: %v", err)
	case uid != 0 && uid != os.Geteuid():
		s.refused.Add(1)
		return fmt.Sprintf("control: refused: uid %d may not control this baton (only root and uid %d may)", uid, os.Geteuid())
	}
	return ""
}

// handle reads the request on conn and answers it as its command says;
// streamed: the answer was written already (logs).
func (s *Server) handle(conn net.Conn, quit <-chan struct{}) (r Response, streamed bool) {
	conn.SetReadDeadline(time.Now().Add(readTimeout))
	line, err := bufio.NewReaderSize(conn, MaxRequest).ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return Response{Error: fmt.Sprintf("control: request longer than %d bytes", MaxRequest)}, false
	case err != nil && len(line) == 0:
		return Response{Error: "control: no request (want one JSON line)"}, false
	}
	req, c, err := ParseRequest(line)
	if err != nil {
		return Response{Error: err.Error()}, false
	}
	// The reply channel is buffered: the loop never blocks on it.
	reply := make(chan Response, 1)
	switch {
	case c.Event != nil:
		s.Post(c.Event(req, func(r lifecycle.Result) { reply <- resultResponse(r) }))
	case c.Read != nil:
		s.OnLoop(func() { reply <- c.Read(s.State) })
	default:
		s.streamLogs(conn, req, quit)
		return Response{}, true
	}
	r, ok := receive(reply, quit)
	if !ok {
		return Response{Error: "control: baton stopped"}, false
	}
	return r, false
}

// streamLogs answers logs: the last lines, one response each, then with
// Follow every new line until the client closes its end or baton stops.
// A client that does not read within the write timeout is cut off; one
// that reads slowly loses lines, and is told how many.
func (s *Server) streamLogs(conn net.Conn, req Request, quit <-chan struct{}) {
	n := DefaultLogLines
	if req.Lines != nil {
		n = *req.Lines
	}
	// The ring holds fewer than MaxLogLines lines: with a filter, the
	// last n are those of the whole ring that match.
	match, all := logFilter(req, n)
	last := func(kept []linering.Line) []linering.Line {
		kept = slices.DeleteFunc(kept, func(l linering.Line) bool { return !match(l) })
		return kept[max(0, len(kept)-n):]
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
		b, _ := json.Marshal(Response{OK: true, Log: &LogLine{Time: l.Time, Slot: l.Slot, PID: l.PID, Stream: l.Stream,
			Line: l.Text, Cut: l.Cut, Dropped: dropped}})
		conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, err := bw.Write(append(b, '\n'))
		failed = err != nil
	}
	flush := func() bool {
		if failed {
			return false
		}
		conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		return bw.Flush() == nil
	}
	if !req.Follow {
		for _, l := range last(s.Ring.Last(all)) {
			send(l, 0)
		}
		flush()
		return
	}
	if s.followers.Add(1) > maxFollowers {
		s.followers.Add(-1)
		writeResponse(conn, Response{Error: fmt.Sprintf("control: logs: %d clients follow already; try again later", maxFollowers)})
		return
	}
	defer s.followers.Add(-1)
	kept, f := s.Ring.Follow(all)
	defer f.Close()
	for _, l := range last(kept) {
		send(l, 0)
	}
	// Lines lost while following are counted whatever their slot or
	// stream, and told with the next line that matches.
	dropped := 0
	follow := func(l linering.Line) {
		dropped += f.Dropped()
		if match(l) {
			send(l, dropped)
			dropped = 0
		}
	}
	if !flush() {
		return
	}
	// The client says it is done by closing its end.
	gone := make(chan struct{})
	conn.SetReadDeadline(time.Time{})
	go func() {
		defer close(gone)
		io.Copy(io.Discard, io.LimitReader(conn, MaxRequest))
	}()
	for {
		select {
		case l := <-f.Lines():
			follow(l)
			// Take what else is there before writing.
			for more := true; more; {
				select {
				case l := <-f.Lines():
					follow(l)
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
func writeResponse(conn net.Conn, r Response) {
	conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	b, _ := json.Marshal(r)
	conn.Write(append(b, '\n'))
}

// logFilter returns which lines a logs request for the last n wants and
// how many of the ring's last lines to look through: n without a filter,
// all of them with one.
func logFilter(req Request, n int) (match func(linering.Line) bool, look int) {
	if req.Slot == nil && req.Stream == "" {
		return func(linering.Line) bool { return true }, n
	}
	return func(l linering.Line) bool {
		return (req.Slot == nil || l.Slot == *req.Slot) && (req.Stream == "" || l.Stream == req.Stream)
	}, MaxLogLines
}
