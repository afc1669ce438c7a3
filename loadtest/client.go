package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
)

// outcome is how one request ended; it indexes Generator.counts.
type outcome int

const (
	outOK outcome = iota
	outRefused
	outReset
	outEOF
	outTimeout
	outBadStatus
	outOther
	outUnclosed
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "refused", "reset", "eof", "timeout", "status", "other", "unclosed"}

func (o outcome) String() string { return outcomeNames[o] }

// classify maps a request's error to the counter it belongs to. Order
// matters: a reset wrapped in a read error is a reset, not an EOF.
func classify(err error) outcome {
	var se *statusError
	var ne net.Error
	switch {
	case err == nil:
		return outOK
	case errors.As(err, &se):
		return outBadStatus
	case errors.Is(err, errUnclosed):
		return outUnclosed
	case errors.Is(err, syscall.ECONNREFUSED):
		return outRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return outReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return outEOF
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return outTimeout
	}
	return classifyText(err.Error())
}

// statusError reports a complete response whose status is not 200.
type statusError struct{ status string }

func (e *statusError) Error() string { return "load: response status " + e.status }

// requestBytes returns the whole request a client writes, every time.
func requestBytes(o Options) []byte {
	s := "GET " + o.Path + " HTTP/1.1\r\nHost: " + o.Addr + "\r\n"
	if o.Mode == PerRequest {
		s += "Connection: close\r\n"
	}
	return []byte(s + "\r\n")
}

// client is one simulated HTTP/1.1 client. It never retries: each call to
// do is exactly one attempt, on the kept connection if there is one.
type client struct {
	addr      string
	req       []byte
	keepAlive bool
	timeout   time.Duration

	conn  net.Conn // nil between connections
	br    *bufio.Reader
	fresh bool // the last do dialed the connection it used
}

// do performs one request within c.timeout and returns the response's X-Pid
// header. The connection is kept only in keep-alive mode, after a complete
// response that did not ask for the connection to be closed.
func (c *client) do() (pid string, err error) {
	deadline := time.Now().Add(c.timeout)
	c.fresh = c.conn == nil
	if c.conn == nil {
		d := net.Dialer{Deadline: deadline, ControlContext: loopbackOnly}
		conn, err := d.Dial("tcp", c.addr)
		if err != nil {
			return "", err
		}
		c.conn = conn
		if c.br == nil {
			c.br = bufio.NewReader(conn)
		} else {
			c.br.Reset(conn)
		}
	}
	keep := false
	defer func() {
		if !keep {
			c.close()
		}
	}()
	if err := c.conn.SetDeadline(deadline); err != nil {
		return "", fmt.Errorf("load: set deadline: %w", err)
	}
	if _, err := c.conn.Write(c.req); err != nil {
		return "", fmt.Errorf("load: write request: %w", err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return "", fmt.Errorf("load: read response: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", fmt.Errorf("load: read body (status %q): %w", resp.Status, err)
	}
	keep = c.keepAlive && !resp.Close
	if resp.StatusCode != http.StatusOK {
		return "", &statusError{resp.Status}
	}
	return resp.Header.Get("X-Pid"), nil
}

func (c *client) newConn() bool { return c.fresh }

// close closes the connection, if any.
func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// loopbackOnly is a net.Dialer control hook that refuses to connect to an
// address that is not loopback, whatever "localhost" resolved to.
func loopbackOnly(_ context.Context, network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		return fmt.Errorf("%w: %s resolved to %s", ErrNotLoopback, network, address)
	}
	return nil
}

// classifyText classifies an error that carries no error value to test,
// only its text: HTTP/2's and gRPC's errors about the connection under a
// request. What ended the connection before the answer counts as an EOF.
func classifyText(s string) outcome {
	has := func(subs ...string) bool {
		for _, sub := range subs {
			if strings.Contains(s, sub) {
				return true
			}
		}
		return false
	}
	switch {
	case has("connection refused"):
		return outRefused
	case has("connection reset", "broken pipe", "stream error", "RST_STREAM"):
		return outReset
	case has("EOF", "connection lost", "GOAWAY", "force closed", "closed the connection", "transport is closing", "client connection closed"):
		return outEOF
	case has("deadline exceeded", "timeout", "i/o timeout"):
		return outTimeout
	}
	return outOther
}
