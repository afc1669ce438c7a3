package drain

import (
	"bytes"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"testing"

	"golang.org/x/net/http2"
)

// wire is the far end of an h2conn's writes: it keeps them.
type wire struct {
	net.Conn // nil: only Write is called
	b        bytes.Buffer
}

func (w *wire) Write(p []byte) (int, error) { return w.b.Write(p) }

// settingsLen is the length of serverFrames' SETTINGS, which has one
// setting.
const settingsLen = frameHeaderLen + 6

// serverFrames are frames as net/http's HTTP/2 server writes them: its
// SETTINGS first, then a response whose DATA frame is larger than a write.
func serverFrames(t *testing.T, data int) []byte {
	t.Helper()
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 250})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x88}, EndHeaders: true})
	fr.WriteData(1, true, bytes.Repeat([]byte{'x'}, data))
	return b.Bytes()
}

// frameTypes parses b as frames, failing the test if it is not a whole
// number of well-formed ones, and returns them.
func frameTypes(t *testing.T, b []byte) []http2.Frame {
	t.Helper()
	fr := http2.NewFramer(nil, bytes.NewReader(b))
	fr.SetMaxReadFrameSize(1 << 20)
	var fs []http2.Frame
	for {
		f, err := fr.ReadFrame()
		if err == io.EOF {
			return fs
		}
		if err != nil {
			t.Fatalf("frame %d: %v", len(fs)+1, err)
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			// The Framer reuses its buffer: keep only the header.
			fs = append(fs, &http2.DataFrame{FrameHeader: f.FrameHeader})
		default:
			fs = append(fs, f)
		}
	}
}

// write hands b to c in writes of n bytes, as a server's buffered
// writer would, cutting frames anywhere.
func write(t *testing.T, c *h2conn, b []byte, n int) {
	t.Helper()
	for len(b) > 0 {
		k := min(n, len(b))
		if m, err := c.Write(b[:k]); m != k || err != nil {
			t.Fatalf("Write: %d of %d, %v", m, k, err)
		}
		b = b[k:]
	}
}

// The drain's frames go between two of the server's, however its writes
// cut them: asked for in the middle of a frame, the first PING follows
// that frame; what the server writes next waits, and goes out after the
// first GOAWAY and the second PING.
func TestH2connWritesBetweenFrames(t *testing.T) {
	for _, n := range []int{1, 7, 9, 10, 4096, 1 << 20} {
		w := new(wire)
		c := newH2Conn(w, nil, false)
		out := serverFrames(t, 20000)
		half := len(out) / 2 // inside the DATA frame
		write(t, c, out[:half], n)
		c.wmu.Lock()
		c.pending = true
		c.flushPing()
		c.wmu.Unlock()
		write(t, c, out[half:], n)
		held := serverFrames(t, 100)[settingsLen:] // a response
		write(t, c, held, n)
		if !c.holding || w.b.Len() != len(out)+frameHeaderLen+pingLen {
			t.Fatalf("writes of %d: holding %t, %d bytes written; want the server's %d and a PING, then holding", n, c.holding, w.b.Len(), len(out))
		}
		c.wmu.Lock()
		c.release()
		c.wmu.Unlock()
		fs := frameTypes(t, w.b.Bytes())
		var got []http2.FrameType
		for _, f := range fs {
			got = append(got, f.Header().Type)
		}
		want := []http2.FrameType{http2.FrameSettings, http2.FrameHeaders, http2.FrameData, http2.FramePing, http2.FrameGoAway, http2.FramePing, http2.FrameHeaders, http2.FrameData}
		if !slices.Equal(got, want) {
			t.Fatalf("writes of %d: frames %v, want %v", n, got, want)
		}
		if g := fs[4].(*http2.GoAwayFrame); g.LastStreamID != math.MaxInt32 || g.ErrCode != http2.ErrCodeNo {
			t.Errorf("writes of %d: first GOAWAY %v, want NO_ERROR with the largest stream id", n, g)
		}
		if p1, p2 := fs[3].(*http2.PingFrame), fs[5].(*http2.PingFrame); p1.Data != quietPing || p2.Data != noticePing || p1.IsAck() || p2.IsAck() {
			t.Errorf("writes of %d: PINGs %v and %v", n, p1, p2)
		}
	}
}

// A header block (HEADERS and its CONTINUATIONs) admits no other frame
// (RFC 9113 §6.10): a client takes a PING inside one for a connection
// error, and drops every stream.
func TestH2connKeepsHeaderBlocksWhole(t *testing.T) {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings()
	settings := b.Len()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: bytes.Repeat([]byte{0}, 100)})
	headers := b.Len()
	fr.WriteContinuation(1, false, bytes.Repeat([]byte{0}, 100))
	fr.WriteContinuation(1, true, bytes.Repeat([]byte{0}, 100))
	block := b.Len()
	fr.WriteData(1, true, []byte("body"))
	out := b.Bytes()
	for _, cut := range []int{settings + 20, headers, headers + 50, block - 1} {
		w := new(wire)
		c := newH2Conn(w, nil, false)
		write(t, c, out[:cut], 4096)
		c.wmu.Lock()
		c.pending = true
		c.flushPing()
		c.wmu.Unlock()
		write(t, c, out[cut:], 4096)
		c.wmu.Lock()
		c.release()
		c.wmu.Unlock()
		fs := frameTypes(t, w.b.Bytes())
		if len(fs) != 8 || fs[4].Header().Type != http2.FramePing {
			t.Errorf("drain asked for at byte %d: %d frames, want the PING after the header block", cut, len(fs))
		}
	}
}

// A server that writes more than holdMax while the client has not
// answered the first PING has its output sent, after the notice, at once.
func TestH2connHoldsAtMostHoldMax(t *testing.T) {
	w := new(wire)
	c := newH2Conn(w, nil, false)
	write(t, c, serverFrames(t, 0)[:settingsLen], 4096)
	c.wmu.Lock()
	c.pending = true
	c.flushPing()
	c.wmu.Unlock()
	more := serverFrames(t, 16384)[settingsLen:]
	for range holdMax/len(more) + 1 {
		write(t, c, more, 4096)
	}
	select {
	case <-c.released:
	default:
		t.Fatalf("%d bytes held, the notice not written", len(c.held))
	}
	if len(c.held) != 0 || c.holding {
		t.Fatalf("released, but %d bytes still held", len(c.held))
	}
	fs := frameTypes(t, w.b.Bytes())
	if fs[1].Header().Type != http2.FramePing || fs[2].Header().Type != http2.FrameGoAway || fs[3].Header().Type != http2.FramePing {
		t.Fatalf("frames %v, want SETTINGS, PING, GOAWAY, PING, then the rest", fs[:4])
	}
}

// A server that sent a GOAWAY of its own before the drain keeps it: a
// last stream id may not grow, so the drain sends neither PING nor GOAWAY.
func TestH2connAfterServersGoAway(t *testing.T) {
	w := new(wire)
	c := newH2Conn(w, nil, false)
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings()
	fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	write(t, c, b.Bytes(), 4096)
	c.wmu.Lock()
	c.pending = true
	c.flushPing()
	c.wmu.Unlock()
	if !c.skipped || c.holding || w.b.Len() != b.Len() {
		t.Fatalf("skipped %t holding %t, %d bytes written of the server's %d", c.skipped, c.holding, w.b.Len(), b.Len())
	}
}

// The client's answers are found in what it sends, however its reads cut
// them, and another PING ACK is not taken for one.
func TestH2connHearsTheAnswers(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings()
	fr.WritePing(true, [8]byte{'n', 'o', 't', ' ', 'o', 'u', 'r', 's'})
	fr.WritePing(true, quietPing)
	fr.WriteWindowUpdate(0, 1000)
	fr.WritePing(true, noticePing)
	for _, n := range []int{1, 5, 9, 24, 4096} {
		client, server := net.Pipe()
		c := newH2Conn(server, server, true)
		go func() {
			for p := b.Bytes(); len(p) > 0; p = p[min(n, len(p)):] {
				client.Write(p[:min(n, len(p))])
			}
			client.Close()
		}()
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, b.Bytes()[len(http2.ClientPreface):]) {
			t.Fatalf("reads of %d: %d bytes, %v; want the frames after the preface", n, len(got), err)
		}
		for name, ch := range map[string]chan struct{}{"first": c.quiet, "second": c.heard} {
			select {
			case <-ch:
			default:
				t.Errorf("reads of %d: the answer to the %s PING not heard", n, name)
			}
		}
	}
}

// A client whose first bytes over TLS are not HTTP/2's preface gets no
// further.
func TestH2connBadPreface(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		client.Write([]byte("PRI * HTTP/1.1\r\n\r\n"))
		client.Close()
	}()
	if _, err := io.ReadAll(newH2Conn(server, server, true)); err != errBadPreface {
		t.Fatalf("read %v, want %v", err, errBadPreface)
	}
}

// Connections that write their notices at the same moment write each its
// own bytes: what a connection held is never put in memory another
// connection's notice shares.
func TestH2connNoticesAreTheirOwn(t *testing.T) {
	var conns [8]*h2conn
	var wires [8]*wire
	var held [8][]byte
	for i := range conns {
		wires[i] = new(wire)
		conns[i] = newH2Conn(wires[i], nil, false)
		write(t, conns[i], serverFrames(t, 0)[:settingsLen], 4096)
		conns[i].wmu.Lock()
		conns[i].pending = true
		conns[i].flushPing()
		conns[i].wmu.Unlock()
		var b bytes.Buffer
		http2.NewFramer(&b, nil).WriteWindowUpdate(uint32(2*i+1), uint32(i+1)) // a small output
		held[i] = b.Bytes()
		write(t, conns[i], held[i], 4096)
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			c.wmu.Lock()
			c.release()
			c.wmu.Unlock()
		})
	}
	wg.Wait()
	for i, w := range wires {
		if got := w.b.Bytes()[w.b.Len()-len(held[i]):]; !bytes.Equal(got, held[i]) {
			t.Errorf("connection %d wrote %x after its notice, want what it held, %x", i, got, held[i])
		}
	}
}
