package drain_test

import (
	"bytes"
	"crypto/tls"
	"math"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/batonhq/baton/drain"
	"github.com/batonhq/baton/drain/draintest"
)

// frame is what the raw client read: the fields of the frames the tests
// look at, copied out of the Framer's reused buffers.
type frame struct {
	typ       http2.FrameType
	stream    uint32
	endStream bool
	ack       bool
	status    string        // HEADERS
	lastID    uint32        // GOAWAY
	code      http2.ErrCode // GOAWAY
	ping      [8]byte       // PING
}

// rawClient is an HTTP/2 client made of frames, to see what a server
// sends and when: the test goroutine writes, a goroutine of its own
// reads until the connection ends.
type rawClient struct {
	t      *testing.T
	c      net.Conn
	fr     *http2.Framer
	scheme string
	frames chan frame // closed when the connection ends
}

// dialRaw connects to addr (over TLS with ALPN "h2" if cfg is set, else
// with prior knowledge) and sends the client's preface and SETTINGS.
func dialRaw(t *testing.T, addr string, cfg *tls.Config) *rawClient {
	t.Helper()
	rc := connectRaw(t, new(net.Dialer), addr, cfg)
	rc.frames = make(chan frame, 64)
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	go rc.receive()
	return rc
}

// connectRaw is dialRaw with d, and without the reader: the test reads
// frames with rc.fr.
func connectRaw(t *testing.T, d *net.Dialer, addr string, cfg *tls.Config) *rawClient {
	t.Helper()
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	scheme := "http"
	if cfg != nil {
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Fatalf("ALPN chose %q, want h2", p)
		}
		c, scheme = tc, "https"
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawClient{t: t, c: c, fr: http2.NewFramer(c, c), scheme: scheme}
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (rc *rawClient) receive() {
	defer close(rc.frames)
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			return
		}
		h := f.Header()
		fr := frame{typ: h.Type, stream: h.StreamID}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			fr.status, fr.endStream = f.PseudoValue("status"), f.StreamEnded()
		case *http2.DataFrame:
			fr.endStream = f.StreamEnded()
		case *http2.GoAwayFrame:
			fr.lastID, fr.code = f.LastStreamID, f.ErrCode
		case *http2.PingFrame:
			fr.ping, fr.ack = f.Data, f.IsAck()
		case *http2.SettingsFrame:
			fr.ack = f.IsAck()
		}
		rc.frames <- fr
	}
}

// get opens stream id with a GET of /.
func (rc *rawClient) get(id uint32) {
	rc.t.Helper()
	rc.getPath(id, "/")
}

// getPath opens stream id with a GET of path.
func (rc *rawClient) getPath(id uint32, path string) {
	rc.t.Helper()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", rc.scheme}, {":authority", "drain.test"}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		rc.t.Fatal(err)
	}
}

// read returns the next frame from the server, ok false once the
// connection has ended.
func (rc *rawClient) read() (f frame, ok bool) {
	rc.t.Helper()
	select {
	case f, ok = <-rc.frames:
		return f, ok
	case <-time.After(eventTimeout):
		rc.t.Fatalf("nothing from the server within %v", eventTimeout)
		return frame{}, false
	}
}

// next returns the next frame that is not one of the connection's
// housekeeping (SETTINGS, WINDOW_UPDATE, DATA), answering the server's
// SETTINGS as a client must.
func (rc *rawClient) next() frame {
	rc.t.Helper()
	for {
		f, ok := rc.read()
		if !ok {
			rc.t.Fatal("the server closed the connection")
		}
		switch {
		case f.typ == http2.FrameSettings && !f.ack:
			if err := rc.fr.WriteSettingsAck(); err != nil {
				rc.t.Fatal(err)
			}
		case f.typ == http2.FrameSettings, f.typ == http2.FrameWindowUpdate, f.typ == http2.FrameData:
		default:
			return f
		}
	}
}

// served reads the response to stream id, the next frame, and wants 200.
func (rc *rawClient) served(id uint32) {
	rc.t.Helper()
	if f := rc.next(); f.typ != http2.FrameHeaders || f.stream != id || f.status != "200" {
		rc.t.Fatalf("got %+v, want the 200 response to stream %d", f, id)
	}
}

// closed waits for the server to end the connection, which sends no
// response or GOAWAY meanwhile.
func (rc *rawClient) closed() {
	rc.t.Helper()
	for {
		f, ok := rc.read()
		if !ok {
			return
		}
		if f.typ == http2.FrameHeaders || f.typ == http2.FrameGoAway {
			rc.t.Fatalf("after the final GOAWAY: %+v", f)
		}
	}
}

// The drain of an HTTP/2 connection, frame by frame, over TLS and h2c. A
// PING, after which the server's output waits for the client's answer;
// then the first GOAWAY, with the largest stream id (RFC 9113 §6.8), and
// a PING, ahead of the responses that waited; a stream the client opened
// after that GOAWAY (a request that was on the wire) is served; once the
// client answers the second PING the final GOAWAY carries the last stream
// served; the connection then closes and the drain ends on its own. A
// client that never answers gets each step a second later. (A server
// that sends only the final GOAWAY refuses that stream; one that sends
// the first GOAWAY right after responses the client has yet to read has
// it refuse, itself, the requests those responses make it send.)
func TestTwoPhaseGoAway(t *testing.T) {
	c := draintest.SelfSigned(t)
	clients := map[string]*tls.Config{
		"tls": {RootCAs: c.Pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}},
	}
	for _, tt := range http2Setups(c) {
		for _, answer := range []bool{true, false} {
			name := tt.name + "/answered"
			if !answer {
				name = tt.name + "/never-answered"
			}
			t.Run(name, func(t *testing.T) {
				ln := listen(t)
				s := startServer(t, tt.listener(dup(t, ln)), "old", drain.Options{Timeout: 10 * time.Second}, nil, tt.configure)
				rc := dialRaw(t, ln.Addr().String(), clients[tt.name])
				rc.get(1)
				rc.served(1)

				s.cancel()
				quiet := rc.next()
				if quiet.typ != http2.FramePing || quiet.ack {
					t.Fatalf("first frame of the drain: %+v, want a PING", quiet)
				}
				pinged := time.Now()
				// A request that was on its way as the drain began: its
				// response waits for the answer to the PING.
				rc.get(3)
				if answer {
					if err := rc.fr.WritePing(true, quiet.ping); err != nil {
						t.Fatal(err)
					}
				}
				first := rc.next()
				waited := time.Since(pinged)
				if first.typ != http2.FrameGoAway || first.lastID != math.MaxInt32 || first.code != http2.ErrCodeNo {
					t.Fatalf("after the first PING: %+v, want GOAWAY NO_ERROR with last stream %d", first, math.MaxInt32)
				}
				if !answer && (waited < 900*time.Millisecond || waited > 5*time.Second) {
					t.Errorf("first GOAWAY %v after a PING never answered, want about a second", waited)
				}
				ping := rc.next()
				if ping.typ != http2.FramePing || ping.ack || ping.ping == quiet.ping {
					t.Fatalf("after the first GOAWAY: %+v, want another PING", ping)
				}
				pinged = time.Now()
				rc.served(3)
				// A request that was on its way as the GOAWAY was.
				rc.get(5)
				rc.served(5)
				if answer {
					if err := rc.fr.WritePing(true, ping.ping); err != nil {
						t.Fatal(err)
					}
				}
				final := rc.next()
				waited = time.Since(pinged)
				if final.typ != http2.FrameGoAway || final.lastID != 5 || final.code != http2.ErrCodeNo {
					t.Fatalf("after the second PING: %+v, want the final GOAWAY NO_ERROR with last stream 5", final)
				}
				if !answer && (waited < 900*time.Millisecond || waited > 5*time.Second) {
					t.Errorf("final GOAWAY %v after a PING never answered, want about a second", waited)
				}
				rc.closed()
				if err := s.drain(t); err != nil {
					t.Errorf("drain: %v", err)
				}
				t.Logf("final GOAWAY %v after the second PING", waited)
			})
		}
	}
}
