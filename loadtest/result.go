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
	// ConnPIDs counts, for HTTP/1, the connections by the pid that gave
	// the first OK response on each: how a balancer dealt them, apart
	// from how fast each worker then served its share.
	ConnPIDs map[string]int64
	Elapsed  time.Duration // from Start to the end of the last request (or to now, for a Snapshot of a running load)
	Samples  []string      // up to MaxSamples example error messages, for test logs
	Latency  Latency       // of the OK requests
	Timeline []Bucket      // with Options.Timeline: what ended in each bucket
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

// Add counts o into r, as if o's requests had been made in a run of r's
// that lasted o.Elapsed longer: a load measured in slices (interleaved
// with another's, so that the machine's drift falls on both alike) adds
// up to one Result. Counters, PIDs, ConnPIDs, Elapsed and Latency add; Samples
// keep the first MaxSamples; Timeline, a run's own clock, is not kept.
func (r *Result) Add(o Result) {
	if r.Requests == 0 && r.Elapsed == 0 {
		r.Mode, r.Protocol, r.Concurrency = o.Mode, o.Protocol, o.Concurrency
	}
	r.Requests += o.Requests
	r.OK += o.OK
	r.Refused += o.Refused
	r.Reset += o.Reset
	r.EOF += o.EOF
	r.Timeout += o.Timeout
	r.BadStatus += o.BadStatus
	r.Other += o.Other
	r.Unclosed += o.Unclosed
	r.CloseFrames += o.CloseFrames
	r.Elapsed += o.Elapsed
	if len(o.PIDs) > 0 && r.PIDs == nil {
		r.PIDs = make(map[string]int64, len(o.PIDs))
	}
	for pid, n := range o.PIDs {
		r.PIDs[pid] += n
	}
	if len(o.ConnPIDs) > 0 && r.ConnPIDs == nil {
		r.ConnPIDs = make(map[string]int64, len(o.ConnPIDs))
	}
	for pid, n := range o.ConnPIDs {
		r.ConnPIDs[pid] += n
	}
	r.Samples = append(r.Samples, o.Samples[:min(len(o.Samples), MaxSamples-min(len(r.Samples), MaxSamples))]...)
	r.Latency.add(o.Latency)
	r.Timeline = nil
}
