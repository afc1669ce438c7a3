package loadtest

import (
	"fmt"
	"time"
)

// Result holds the counters of a run. Requests == OK + Failed() once the run
// is over; a Snapshot taken meanwhile also counts requests still in flight in
// Requests only.
type Result struct {
	Mode        Mode
	Protocol    Protocol
	Concurrency int

	Requests  int64 // attempted
	OK        int64 // 200 with full body
	Refused   int64 // ECONNREFUSED on dial
	Reset     int64 // ECONNRESET / EPIPE
	EOF       int64 // connection closed before a full response (io.EOF, io.ErrUnexpectedEOF)
	Timeout   int64 // Options.Timeout passed during dial, write or read
	BadStatus int64 // a response other than 200
	Other     int64 // any other error
	Unclosed  int64 // WebSocket: the session ended without a close frame (an end of stream in the middle of it)
	// CloseFrames counts the WebSocket sessions the server ended with a
	// close frame: not a failure, the protocol's way to leave; the
	// client answers it, and sends the message it had not had echoed on
	// a new session.
	CloseFrames int64
	PIDs        map[string]int64 // value of the X-Pid response header -> count of OK responses; OK responses without one are not counted here
	Elapsed     time.Duration    // from Start to the end of the last request (or to now, for a Snapshot of a running load)
	Samples     []string         // up to MaxSamples example error messages, for test logs
	Latency     Latency          // of the OK requests
	Timeline    []Bucket         // with Options.Timeline: what ended in each bucket
}

// Bucket is one Options.Timeline interval.
type Bucket struct{ OK, Failed int64 }

// MaxSamples bounds Result.Samples.
const MaxSamples = 10

// Failed returns the number of failed requests: everything but OK.
func (r Result) Failed() int64 {
	return r.Refused + r.Reset + r.EOF + r.Timeout + r.BadStatus + r.Other + r.Unclosed
}

// RPS returns the requests attempted per second of Elapsed.
func (r Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// String returns the counters on one line, for logs. Runs of another
// protocol than HTTP1 start with it, and WebSocket ones add their counts.
func (r Result) String() string {
	s := r.http1String()
	switch r.Protocol {
	case HTTP1:
		return s
	case WebSocket:
		s += fmt.Sprintf(" unclosed=%d close-frames=%d", r.Unclosed, r.CloseFrames)
	}
	return "proto=" + r.Protocol.String() + " " + s
}

func (r Result) http1String() string {
	return fmt.Sprintf("mode=%v c=%d requests=%d ok=%d failed=%d (refused=%d reset=%d eof=%d timeout=%d status=%d other=%d) rps=%.1f pids=%d",
		r.Mode, r.Concurrency, r.Requests, r.OK, r.Failed(),
		r.Refused, r.Reset, r.EOF, r.Timeout, r.BadStatus, r.Other,
		r.RPS(), len(r.PIDs))
}
