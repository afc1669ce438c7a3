package loadtest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Defaults for the zero values of Options.
const (
	DefaultPath        = "/"
	DefaultConcurrency = 32
	DefaultTimeout     = 5 * time.Second
	// DefaultGRPCMethod is the method a GRPC run calls by default: the
	// hello service of examples/greeter (request and response a
	// google.protobuf.StringValue).
	DefaultGRPCMethod = "/baton.hello.Hello/Say"
)

// Mode says how clients use connections.
type Mode int

const (
	// KeepAlive gives each client one connection that it reuses. It
	// reconnects, without counting a failure, only after the server sent
	// "Connection: close"; after a failure it reconnects at once.
	KeepAlive Mode = iota
	// PerRequest dials a new connection for every request and sends
	// "Connection: close".
	PerRequest
)

// String returns "keep-alive" or "per-request", the names ParseMode accepts.
func (m Mode) String() string {
	switch m {
	case KeepAlive:
		return "keep-alive"
	case PerRequest:
		return "per-request"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// ParseMode returns the Mode named s, as printed by Mode.String.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "keep-alive":
		return KeepAlive, nil
	case "per-request":
		return PerRequest, nil
	}
	return 0, fmt.Errorf("load: unknown mode %q (want keep-alive or per-request)", s)
}

// Options configure a run. Zero values mean the documented defaults.
type Options struct {
	Addr        string        // host:port; must be a loopback address (127.0.0.0/8, ::1, localhost) or Start returns an error
	Path        string        // default "/"; for GRPC the full method name, default DefaultGRPCMethod
	Concurrency int           // default 32
	Duration    time.Duration // stop after this long; 0 = until Stop / ctx done
	Requests    int64         // stop after this many requests in total; 0 = no limit
	Mode        Mode
	// Protocol is what the clients speak; the zero value is HTTP1.
	Protocol Protocol
	// TLS is the clients' TLS configuration. HTTP2 needs one (against a
	// self-signed server, one with its certificate in RootCAs); GRPC
	// uses TLS when it is set; the others refuse it.
	TLS     *tls.Config
	Timeout time.Duration // per request (dial+write+read), default 5s
	// Timeline, when above zero, counts OK and failed requests in
	// buckets of this width from the start (Result.Timeline), by when
	// each ended; at most MaxTimeline buckets.
	Timeline time.Duration
	// Nice, above 0, runs each client on an OS thread of its own at
	// this nice value (0 to 19), so that the load takes only the CPU the
	// processes it loads leave, as clients on other machines would. On
	// one machine a closed-loop load otherwise takes its share of every
	// core: the server's new processes start several times slower, and
	// what waits on them (a reload) takes that much longer. For HTTP/2
	// and gRPC it is the clients' goroutines, not their transports'.
	Nice int
}

// MaxTimeline bounds Result.Timeline.
const MaxTimeline = 100000

// withDefaults validates o and fills in its defaults.
func (o Options) withDefaults() (Options, error) {
	if err := checkLoopback(o.Addr); err != nil {
		return o, err
	}
	if o.Path == "" {
		o.Path = DefaultPath
		if o.Protocol == GRPC {
			o.Path = DefaultGRPCMethod
		}
	}
	if !strings.HasPrefix(o.Path, "/") || strings.ContainsAny(o.Path, " \t\r\n") {
		return o, fmt.Errorf("load: path %q: must start with / and contain no white space", o.Path)
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	switch {
	case o.Concurrency < 0:
		return o, fmt.Errorf("load: negative concurrency %d", o.Concurrency)
	case o.Duration < 0:
		return o, fmt.Errorf("load: negative duration %v", o.Duration)
	case o.Requests < 0:
		return o, fmt.Errorf("load: negative request limit %d", o.Requests)
	case o.Timeout < 0:
		return o, fmt.Errorf("load: negative timeout %v", o.Timeout)
	case o.Timeline < 0:
		return o, fmt.Errorf("load: negative timeline bucket %v", o.Timeline)
	case o.Nice < 0 || o.Nice > 19:
		return o, fmt.Errorf("load: nice %d: want 0 to 19", o.Nice)
	case o.Mode != KeepAlive && o.Mode != PerRequest:
		return o, fmt.Errorf("load: unknown mode %v", o.Mode)
	case o.Protocol < 0 || o.Protocol >= numProtocols:
		return o, fmt.Errorf("load: unknown protocol %v", o.Protocol)
	case o.Protocol == HTTP2 && o.TLS == nil:
		return o, errors.New("load: protocol h2 needs a TLS configuration")
	case o.TLS != nil && o.Protocol != HTTP2 && o.Protocol != GRPC:
		return o, fmt.Errorf("load: protocol %v does not use TLS", o.Protocol)
	}
	return o, nil
}

// ErrNotLoopback is returned by Start for an address that is not loopback.
var ErrNotLoopback = errors.New("load: address is not loopback")

// checkLoopback accepts host:port where host is localhost or a loopback IP.
// It resolves nothing: a name other than localhost is refused.
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("load: address %q: %w", addr, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("load: address %q: bad port %q", addr, port)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Unmap().IsLoopback() {
		return fmt.Errorf("%w: %q", ErrNotLoopback, addr)
	}
	return nil
}
