package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// ErrNoAnswer is wrapped by Client.Request's error when no baton listens
// at the path.
var ErrNoAnswer = errors.New("supervisor: control socket: no baton answers")

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
		if err := CheckOwner(uc, c.Path, os.Geteuid()); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return uc, nil
}

// Ask sends one request to the control socket at path, which the caller
// named, and waits for the answer: Client.Request.
func Ask(ctx context.Context, path string, req Request) (Response, error) {
	return Client{Path: path}.Request(ctx, req)
}

// Request sends one request and waits for the answer (a reload's comes
// when it is over), bounded by ctx.
func (c Client) Request(ctx context.Context, req Request) (Response, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return Response{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	b, _ := json.Marshal(req)
	_, werr := conn.Write(append(b, '\n'))
	// A refusal (busy, or not allowed) may come, and the connection
	// close, before the request is written: its answer is still there.
	var resp Response
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
	io.Copy(io.Discard, io.LimitReader(br, MaxRequest))
	if !resp.OK && resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// Stats asks for baton's stats.
func (c Client) Stats(ctx context.Context) (*Stats, error) {
	resp, err := c.Request(ctx, Request{Command: statsName})
	if err == nil && resp.Stats == nil {
		err = errors.New("no stats in its answer")
	}
	return resp.Stats, err
}

// Logs sends req (a request of the command whose answer is lines: logs)
// and calls each for every line of the answer, until it ends (at once
// without Follow; with it, when baton stops) or ctx is done, which is no
// error.
func (c Client) Logs(ctx context.Context, req Request, each func(LogLine)) error {
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	b, _ := json.Marshal(req)
	_, werr := conn.Write(append(b, '\n'))
	dec := json.NewDecoder(bufio.NewReader(conn))
	for {
		var resp Response
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
