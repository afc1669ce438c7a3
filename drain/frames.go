package drain

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"time"
)

// The pieces of HTTP/2 (RFC 9113) that an h2conn reads or writes itself.
const (
	frameHeaderLen    = 9
	frameHeaders      = 0x1
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameContinuation = 0x9
	flagAck           = 0x1
	flagEndHeaders    = 0x4
	pingLen           = 8
)

// clientPreface opens every HTTP/2 connection from the client.
var clientPreface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

var errBadPreface = errors.New("drain: http2: bad client preface")

// The payloads of the drain's two PINGs; the client's PING ACKs carry
// them back.
var (
	quietPing  = [pingLen]byte{'d', 'r', 'a', 'i', 'n', ' ', '#', '1'}
	noticePing = [pingLen]byte{'d', 'r', 'a', 'i', 'n', ' ', '#', '2'}
)

func ping(data [pingLen]byte) []byte {
	return append([]byte{0, 0, pingLen, framePing, 0, 0, 0, 0, 0}, data[:]...)
}

// notice is the first GOAWAY (NO_ERROR, the largest stream id: no new
// streams, please) and the PING whose answer proves the client saw it.
var notice = func() []byte {
	b := []byte{0, 0, 8, frameGoAway, 0, 0, 0, 0, 0}
	b = binary.BigEndian.AppendUint32(b, 1<<31-1)
	b = binary.BigEndian.AppendUint32(b, 0)
	return append(b, ping(noticePing)...)
}()

// holdMax bounds what an h2conn keeps of the server's output while it
// waits for the first PING's answer: about what the initial flow-control
// window of a connection lets a server send.
const holdMax = 64 << 10

// frames follows a stream of HTTP/2 frames through the bytes that pass,
// to know where each ends and what a few of them are.
type frames struct {
	hdr   [frameHeaderLen]byte
	n     int // bytes of the current frame's header seen
	left  int // bytes of its payload still to come
	count int // frames complete

	// The current frame begins or continues a header block that goes
	// on after it: no other frame may come before its end (RFC 9113
	// §6.10).
	inBlock bool

	goAway bool // a GOAWAY has passed

	// On the client's side: the answers to the drain's PINGs.
	acks             bool // look for them
	inAck            bool // the current frame is a PING ACK; its payload goes to ack
	ack              []byte
	quieted, noticed bool // the ACK of quietPing, of noticePing, has passed
}

// atBoundary reports whether the bytes so far end a frame, and a frame
// of another kind may come next: they are not inside a header block.
func (f *frames) atBoundary() bool { return f.n == 0 && !f.inBlock }

// advance moves f over p and returns how many bytes it passed: all of
// them, or with stop set, those up to the first boundary in p.
func (f *frames) advance(p []byte, stop bool) int {
	i := 0
	for i < len(p) {
		if f.n < frameHeaderLen {
			k := copy(f.hdr[f.n:], p[i:])
			f.n += k
			i += k
			if f.n < frameHeaderLen {
				break
			}
			f.left = int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
			typ, flags := f.hdr[3], f.hdr[4]
			f.goAway = f.goAway || typ == frameGoAway
			switch typ {
			case frameHeaders, framePushPromise, frameContinuation:
				f.inBlock = flags&flagEndHeaders == 0
			}
			f.inAck = f.acks && typ == framePing && flags&flagAck != 0 && f.left == pingLen
			f.ack = f.ack[:0]
		}
		k := min(f.left, len(p)-i)
		if f.inAck {
			f.ack = append(f.ack, p[i:i+k]...)
		}
		f.left -= k
		i += k
		if f.left == 0 {
			f.n = 0
			f.count++
			if f.inAck {
				f.quieted = f.quieted || bytes.Equal(f.ack, quietPing[:])
				f.noticed = f.noticed || bytes.Equal(f.ack, noticePing[:])
			}
			if stop && !f.inBlock {
				break
			}
		}
	}
	return i
}

// h2conn is an HTTP/2 connection as net/http's HTTP/2 server sees it. It
// follows the frames both ways, writes the drain's PINGs and first GOAWAY
// between two of the server's frames, and sees the client's answers.
// See http2.go for why and how.
type h2conn struct {
	net.Conn
	key net.Conn // the connection as ConnState saw it

	preface int // bytes of the client's preface still to read (TLS)
	in      frames
	quiet   chan struct{} // closed when the client answers quietPing
	heard   chan struct{} // closed when the client answers noticePing

	wmu      sync.Mutex
	out      frames
	pending  bool          // quietPing waits for the end of a frame
	holding  bool          // the server's bytes go to held
	held     []byte        // what the server wrote since quietPing
	pinged   chan struct{} // closed once quietPing is written, or skipped
	released chan struct{} // closed once the notice is written
	skipped  bool          // the server had sent a GOAWAY of its own first
	told     time.Time     // when the first GOAWAY went out (or was skipped)
	werr     error         // a write failed: the stream of frames is broken
	lastOut  chan struct{} // closed once the server's own GOAWAY is written

	start    sync.Once
	done     chan struct{}        // closed when the server is done with the connection
	final    func()               // the server's own graceful shutdown: the final GOAWAY
	wentAway func(told time.Time) // tells the tracker the final GOAWAY is out
}

func newH2Conn(c, key net.Conn, readPreface bool) *h2conn {
	h := &h2conn{
		Conn: c, key: key,
		quiet: make(chan struct{}), heard: make(chan struct{}),
		pinged: make(chan struct{}), released: make(chan struct{}),
		lastOut: make(chan struct{}), done: make(chan struct{}),
	}
	h.in.acks = true
	if readPreface {
		h.preface = len(clientPreface)
	}
	return h
}

// drainKey is the connection ConnState saw before this one was handed to
// the HTTP/2 server.
func (c *h2conn) drainKey() net.Conn { return c.key }

// h2tlsConn is an h2conn over TLS: the HTTP/2 server checks the TLS
// version and cipher suite through ConnectionState, as it would on the
// *tls.Conn.
type h2tlsConn struct {
	*h2conn
	tls *tls.Conn
}

func (c h2tlsConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

// Read passes the server the client's frames, after checking the client's
// preface (which net/http reads itself, before handing over, only for h2c).
func (c *h2conn) Read(p []byte) (int, error) {
	for c.preface > 0 && len(p) > 0 {
		want := clientPreface[len(clientPreface)-c.preface:]
		n, err := c.Conn.Read(p[:min(len(p), len(want))])
		if !bytes.Equal(p[:n], want[:n]) {
			return 0, errBadPreface
		}
		c.preface -= n
		if err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Read(p)
	if n > 0 && !c.in.noticed {
		quieted := c.in.quieted
		c.in.advance(p[:n], false)
		if c.in.quieted && !quieted {
			close(c.quiet)
		}
		if c.in.noticed {
			close(c.heard)
		}
	}
	return n, err
}

// Write passes the server's bytes on. While quietPing waits, it writes
// them up to the end of a frame, then the PING; from then until the
// notice it keeps them.
func (c *h2conn) Write(p []byte) (n int, err error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for len(p) > 0 {
		if err := c.flushPing(); err != nil {
			return n, err
		}
		if c.holding {
			if len(c.held)+len(p) <= holdMax {
				c.held = append(c.held, p...)
				c.passed(p)
				return n + len(p), nil
			}
			// The client is slow to answer, or the server writes a lot:
			// the notice goes now.
			if err := c.release(); err != nil {
				return n, err
			}
		}
		k := len(p)
		if c.pending {
			s := c.out
			k = s.advance(p, true)
		}
		m, err := c.Conn.Write(p[:k])
		c.passed(p[:m])
		n += m
		p = p[m:]
		if err != nil {
			c.werr = err
			return n, err
		}
	}
	return n, c.flushPing()
}

// passed follows the server's bytes p, written or held. c.wmu is held.
func (c *h2conn) passed(p []byte) {
	had := c.out.goAway
	if c.out.advance(p, false); c.out.goAway && !had {
		close(c.lastOut)
	}
}

// flushPing writes quietPing if it waits and the server's bytes so far end
// its first frame (SETTINGS, which must come first) or a later one. From
// then on the server's bytes are held. c.wmu is held.
func (c *h2conn) flushPing() error {
	if c.werr != nil {
		return c.werr
	}
	if !c.pending || c.out.count == 0 || !c.out.atBoundary() {
		return nil
	}
	c.pending = false
	defer close(c.pinged)
	if c.out.goAway {
		// A last stream id may not grow: the server's GOAWAY stands.
		c.skipped, c.told = true, time.Now()
		return nil
	}
	if _, err := c.Conn.Write(ping(quietPing)); err != nil {
		c.werr = err
		return err
	}
	c.holding = true
	return nil
}

// release writes the notice, then what the server wrote since quietPing.
// c.wmu is held.
func (c *h2conn) release() error {
	if !c.holding {
		return c.werr
	}
	c.holding = false
	c.told = time.Now()
	close(c.released)
	// A buffer of its own: notice is every connection's.
	b := make([]byte, 0, len(notice)+len(c.held))
	_, err := c.Conn.Write(append(append(b, notice...), c.held...))
	c.held = nil
	if err != nil {
		c.werr = err
	}
	return err
}

// goAway sends the client away in the steps http2.go lists, once. It
// returns when the final GOAWAY is out, or the connection is done. Each
// wait for the client's answer lasts at most bound.
func (c *h2conn) goAway(bound time.Duration) {
	c.start.Do(func() {
		c.wmu.Lock()
		c.pending = true
		c.flushPing()
		c.wmu.Unlock()
		select {
		case <-c.pinged:
		case <-c.done:
			return
		}
		if !c.skipped {
			// Write may have written the notice already (held too much).
			if !c.await(c.quiet, c.released, bound) {
				return
			}
			c.wmu.Lock()
			c.release()
			c.wmu.Unlock()
			if !c.await(c.heard, nil, bound) {
				return
			}
		}
		c.final()
		if !c.await(c.lastOut, nil, bound) {
			return
		}
		c.wmu.Lock()
		told := c.told
		c.wmu.Unlock()
		c.wentAway(told)
	})
}

// await waits up to bound for a or b. It returns false if the connection
// is done.
func (c *h2conn) await(a, b <-chan struct{}, bound time.Duration) bool {
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-a:
	case <-b:
	case <-t.C:
	case <-c.done:
		return false
	}
	return true
}
