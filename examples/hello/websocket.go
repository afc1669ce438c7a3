package main

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/batonhq/baton/drain"
)

// The /ws route: a WebSocket echo (RFC 6455, standard library only,
// text and binary messages of one frame up to maxMessage), to show how a
// handler that keeps its connection leaves a drain: drain.Draining says
// the drain began, and the handler sends a close frame (1001, going away),
// waits a second at most for the client's, and returns, which Serve waits
// for.

const (
	wsGUID     = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	maxMessage = 64 << 10

	opText, opBinary, opClose, opPing, opPong = 1, 2, 8, 9, 10
)

// wsFrame is one frame a client sent.
type wsFrame struct {
	op      byte
	payload []byte
}

func websocket(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || key == "" {
		http.Error(w, "hello: /ws wants a WebSocket handshake", http.StatusBadRequest)
		return
	}
	going := drain.Draining(r.Context())
	pid := w.Header().Get("X-Pid")
	c, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	sum := sha1.Sum([]byte(key + wsGUID))
	rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(sum[:]) + "\r\nX-Pid: " + pid + "\r\n\r\n")
	if rw.Flush() != nil {
		return
	}
	frames := make(chan wsFrame)
	go func() {
		defer close(frames)
		for {
			f, err := readFrame(rw.Reader)
			if err != nil {
				return
			}
			frames <- f
		}
	}()
	defer func() {
		c.Close()
		for range frames { // let the reader end
		}
	}()
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				return // the client went without a close frame
			}
			switch f.op {
			case opText, opBinary:
				writeFrame(c, f.op, f.payload)
			case opPing:
				writeFrame(c, opPong, f.payload)
			case opClose:
				writeFrame(c, opClose, f.payload) // the answer ends it
				return
			}
		case <-going:
			code := binary.BigEndian.AppendUint16(nil, 1001)
			writeFrame(c, opClose, append(code, "going away"...))
			// The client answers with its own close frame; messages it
			// sent before that are not echoed any more.
			c.SetReadDeadline(time.Now().Add(time.Second))
			for f := range frames {
				if f.op == opClose {
					return
				}
			}
			return
		}
	}
}

var errFrame = errors.New("hello: bad WebSocket frame")

// readFrame reads one masked frame of a client (no fragments, no
// extensions).
func readFrame(r *bufio.Reader) (wsFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return wsFrame{}, err
	}
	if h[0]&0x80 == 0 || h[0]&0x70 != 0 || h[1]&0x80 == 0 {
		return wsFrame{}, errFrame // a fragment, an extension, or unmasked
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return wsFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return wsFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > maxMessage {
		return wsFrame{}, errFrame
	}
	var mask [4]byte
	if _, err := io.ReadFull(r, mask[:]); err != nil {
		return wsFrame{}, err
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return wsFrame{}, err
	}
	for i := range p {
		p[i] ^= mask[i%4]
	}
	return wsFrame{op: h[0] & 0x0f, payload: p}, nil
}

// writeFrame writes one unmasked frame, as a server does.
func writeFrame(c net.Conn, op byte, p []byte) error {
	b := []byte{0x80 | op}
	switch n := len(p); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
	_, err := c.Write(append(b, p...))
	return err
}
