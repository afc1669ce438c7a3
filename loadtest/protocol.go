package loadtest

import (
	"fmt"
	"strconv"
)

// Protocol says what the clients speak.
type Protocol int

const (
	// HTTP1 is HTTP/1.1, spoken by the package itself: one GET after
	// another.
	HTTP1 Protocol = iota
	// HTTP2 is HTTP/2 over TLS (ALPN "h2"), through net/http's client
	// with HTTP/1 turned off: one GET after another.
	HTTP2
	// H2C is HTTP/2 without TLS (prior knowledge), the same way.
	H2C
	// GRPC is unary gRPC calls of Options.Path.
	GRPC
	// WebSocket is sessions of a WebSocket echo (RFC 6455) at
	// Options.Path: a request is one text message and its echo.
	WebSocket
	numProtocols
)

var protocolNames = [numProtocols]string{"http1", "h2", "h2c", "grpc", "websocket"}

// String returns the name ParseProtocol accepts.
func (p Protocol) String() string {
	if p >= 0 && p < numProtocols {
		return protocolNames[p]
	}
	return "Protocol(" + strconv.Itoa(int(p)) + ")"
}

// ParseProtocol returns the Protocol named s, as printed by
// Protocol.String.
func ParseProtocol(s string) (Protocol, error) {
	for p, name := range protocolNames {
		if s == name {
			return Protocol(p), nil
		}
	}
	return 0, fmt.Errorf("load: unknown protocol %q (want http1, h2, h2c, grpc or websocket)", s)
}

// requester is one client's connection state: do makes exactly one
// attempt and returns the answering worker's pid, if it said.
type requester interface {
	do() (pid string, err error)
	close()
}

// connCounter is a requester that can tell whether its last do was the
// first request on a new connection (Result.ConnPIDs).
type connCounter interface {
	newConn() bool
}

// newRequester returns a client for o.Protocol.
func newRequester(o Options, g *Generator) requester {
	switch o.Protocol {
	case HTTP2, H2C:
		return newHTTP2Client(o)
	case GRPC:
		return newGRPCClient(o)
	case WebSocket:
		return &wsClient{opts: o, closed: &g.closeFrames}
	}
	return &client{
		addr:      o.Addr,
		req:       requestBytes(o),
		keepAlive: o.Mode == KeepAlive,
		timeout:   o.Timeout,
	}
}
