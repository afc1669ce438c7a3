package draintest

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// WebSocketLoad is clients of a WebSocket echo (RFC 6455, one-frame text
// messages), each in a session sending one message after another and
// checking the echo, until Stop. A session the server ends with a close
// frame is answered with one and counted in ServerClosed, and the client
// starts a new one; a session that ends any other way (a reset, an end of
// stream without a close frame, a wrong echo) is a failure.
type WebSocketLoad struct {
	clients
	ServerClosed atomic.Int64
}

// StartWebSocketLoad starts n clients of the WebSocket at addr (host:port)
// and path.
func StartWebSocketLoad(n int, addr, path string) *WebSocketLoad {
	l := &WebSocketLoad{clients: newClients()}
	l.run(n, func(i int) {
		for s := 0; !l.stopped(); s++ {
			if err := l.session(addr, path, fmt.Sprintf("client %d session %d", i, s)); err != nil {
				l.fail(err)
			}
		}
	})
	return l
}

// session runs one session until the server closes it or the load stops.
func (l *WebSocketLoad) session(addr, path, name string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(EventTimeout))
	var key [16]byte
	rand.Read(key[:])
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
		path, addr, base64.StdEncoding.EncodeToString(key[:]))
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return fmt.Errorf("%s: handshake: %w", name, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("%s: handshake: %s", name, resp.Status)
	}
	for n := 0; ; n++ {
		if l.stopped() {
			// The client leaves, as a client should.
			return clientFrame(c, 8, binary.BigEndian.AppendUint16(nil, 1000))
		}
		want := fmt.Sprintf("%s message %d", name, n)
		if err := clientFrame(c, 1, []byte(want)); err != nil {
			return fmt.Errorf("%s: send: %w", name, err)
		}
		op, p, err := serverFrame(r)
		switch {
		case err != nil:
			return fmt.Errorf("%s: ended without a close frame: %w", name, err)
		case op == 8:
			l.ServerClosed.Add(1)
			clientFrame(c, 8, p)
			return nil
		case op != 1 || string(p) != want:
			return fmt.Errorf("%s: echo of %q: opcode %d %q", name, want, op, p)
		}
		l.OK.Add(1)
	}
}

// clientFrame writes one masked frame.
func clientFrame(c net.Conn, op byte, p []byte) error {
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

// serverFrame reads one unmasked frame.
func serverFrame(r *bufio.Reader) (op byte, p []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("a frame of %d bytes", n)
	}
	p = make([]byte, n)
	_, err = io.ReadFull(r, p)
	return h[0] & 0x0f, p, err
}
