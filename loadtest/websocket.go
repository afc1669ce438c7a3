package loadtest

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// errUnclosed is wrapped by the error of a WebSocket session that ended
// without a close frame.
var errUnclosed = errors.New("session ended without a close frame")

// wsClient is one client of a WebSocket echo. A request is one text
// message, answered by the same message. In KeepAlive mode a session
// carries one message after another; in PerRequest mode it carries one,
// and the client closes it (a close frame, and the server's answer).
//
// When the server ends a session with a close frame (a draining worker
// saying goodbye) instead of echoing, the client answers it, counts it
// in closed and sends its message on a new session: the message was not
// taken, which a close frame promises. Any other end of a session in the
// middle of a message (an end of stream, a reset) is a failure.
type wsClient struct {
	opts   Options
	closed *atomic.Int64

	conn net.Conn // nil between sessions
	br   *bufio.Reader
	pid  string // the session's worker, from the handshake's X-Pid
	n    int    // messages sent, for distinct payloads
}

// maxCloseFrames bounds the new sessions one message may need: a server
// that closes every session it opens is failing, not draining.
const maxCloseFrames = 3

func (c *wsClient) do() (string, error) {
	deadline := time.Now().Add(c.opts.Timeout)
	for range maxCloseFrames {
		pid, err, again := c.attempt(deadline)
		if !again {
			if err != nil || c.opts.Mode == PerRequest {
				c.close()
			}
			return pid, err
		}
	}
	return "", fmt.Errorf("load: %d sessions in a row closed by the server before an echo", maxCloseFrames)
}

// attempt sends one message on the session, opening one if need be.
// again: the server ended the session with a close frame instead.
func (c *wsClient) attempt(deadline time.Time) (pid string, err error, again bool) {
	if c.conn == nil {
		if err = c.open(deadline); err != nil {
			return "", err, false
		}
	}
	pid = c.pid
	if err := c.conn.SetDeadline(deadline); err != nil {
		return "", fmt.Errorf("load: set deadline: %w", err), false
	}
	c.n++
	msg := "message " + strconv.Itoa(c.n)
	if err := wsWrite(c.conn, 1, []byte(msg)); err != nil {
		return "", fmt.Errorf("load: send: %w", err), false
	}
	op, p, err := wsRead(c.br)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "", fmt.Errorf("load: read echo: %w: %w", errUnclosed, err), false
	case err != nil:
		return "", fmt.Errorf("load: read echo: %w", err), false
	case op == 8:
		c.closed.Add(1)
		wsWrite(c.conn, 8, p)
		c.close()
		return "", nil, true
	case op != 1 || string(p) != msg:
		return "", fmt.Errorf("load: echo of %q: opcode %d %q", msg, op, p), false
	}
	if c.opts.Mode == PerRequest {
		if err := c.leave(); err != nil {
			return "", err, false
		}
	}
	return pid, nil, false
}

// open starts a session. The worker's pid is in the handshake's X-Pid.
func (c *wsClient) open(deadline time.Time) error {
	d := net.Dialer{Deadline: deadline, ControlContext: loopbackOnly}
	conn, err := d.Dial("tcp", c.opts.Addr)
	if err != nil {
		return err
	}
	conn.SetDeadline(deadline)
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
		c.opts.Path, c.opts.Addr, key); err != nil {
		conn.Close()
		return fmt.Errorf("load: write handshake: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return fmt.Errorf("load: read handshake: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return &statusError{resp.Status}
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != wsAccept(key) {
		conn.Close()
		return fmt.Errorf("load: handshake: Sec-WebSocket-Accept %q, want %q", got, wsAccept(key))
	}
	c.conn, c.br, c.pid = conn, br, resp.Header.Get("X-Pid")
	return nil
}

// leave ends the session as a client should: a close frame (1000), and
// the server's answer to it.
func (c *wsClient) leave() error {
	defer c.close()
	if err := wsWrite(c.conn, 8, binary.BigEndian.AppendUint16(nil, 1000)); err != nil {
		return fmt.Errorf("load: send close: %w", err)
	}
	op, _, err := wsRead(c.br)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("load: read close: %w: %w", errUnclosed, err)
	case err != nil:
		return fmt.Errorf("load: read close: %w", err)
	case op != 8:
		return fmt.Errorf("load: answer to a close frame: opcode %d", op)
	}
	return nil
}

func (c *wsClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// wsAccept is the Sec-WebSocket-Accept a server answers key with.
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsWrite writes one masked frame, as a client must.
func wsWrite(c net.Conn, op byte, p []byte) error {
	b := []byte{0x80 | op}
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	b = append(b, mask[:]...)
	for i, x := range p {
		b = append(b, x^mask[i%4])
	}
	_, err := c.Write(b)
	return err
}

// wsMaxFrame bounds the frames a client reads.
const wsMaxFrame = 1 << 20

// wsRead reads one unmasked frame.
func wsRead(r *bufio.Reader) (op byte, p []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, unexpected(err)
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, unexpected(err)
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if h[1]&0x80 != 0 {
		return 0, nil, errors.New("a masked frame from the server")
	}
	if n > wsMaxFrame {
		return 0, nil, fmt.Errorf("a frame of %d bytes", n)
	}
	p = make([]byte, n)
	_, err = io.ReadFull(r, p)
	return h[0] & 0x0f, p, unexpected(err)
}

// unexpected turns an EOF inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
