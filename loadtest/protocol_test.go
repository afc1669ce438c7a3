package loadtest

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func pidHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Pid", "7")
	if r.ProtoMajor != 2 {
		w.Header().Set("X-Pid", "not http/2")
	}
	io.WriteString(w, "ok")
}

// TestHTTP2 runs both HTTP/2 protocols in both modes against net/http's
// server, and checks the connections each mode makes.
func TestHTTP2(t *testing.T) {
	for _, proto := range []Protocol{HTTP2, H2C} {
		for _, mode := range modes {
			t.Run(proto.String()+"/"+mode.String(), func(t *testing.T) {
				checkLeaks(t)
				s := httptest.NewUnstartedServer(http.HandlerFunc(pidHandler))
				conns := 0
				s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
					if st == http.StateNew {
						conns++ // net/http calls the hook from its accept loop
					}
				}
				o := Options{Protocol: proto, Mode: mode, Concurrency: 2, Requests: 20}
				if proto == HTTP2 {
					s.EnableHTTP2 = true
					s.StartTLS()
					pool := x509.NewCertPool()
					pool.AddCert(s.Certificate())
					o.TLS = &tls.Config{RootCAs: pool}
				} else {
					s.Config.Protocols = new(http.Protocols)
					s.Config.Protocols.SetHTTP1(true)
					s.Config.Protocols.SetUnencryptedHTTP2(true)
					s.Start()
				}
				defer s.Close()
				o.Addr = s.Listener.Addr().String()
				r := finish(t, start(t, o))
				if r.OK != 20 || r.PIDs["7"] != 20 {
					t.Errorf("%v, pids %v: want 20 ok over HTTP/2", r, r.PIDs)
				}
				s.Close() // so that conns is final
				want := map[Mode]int{KeepAlive: 2, PerRequest: 20}[mode]
				if conns != want {
					t.Errorf("%d connections, want %d", conns, want)
				}
			})
		}
	}
}

// TestHTTP2Refused: the h2c client does not fall back to HTTP/1, and a
// closed port is refused.
func TestHTTP2Refused(t *testing.T) {
	checkLeaks(t)
	addr, _ := httpServer(t, pidHandler) // HTTP/1 only
	r := finish(t, start(t, Options{Addr: addr, Protocol: H2C, Concurrency: 1, Requests: 3}))
	if r.OK != 0 || r.Failed() != 3 {
		t.Errorf("%v: want 3 failed against an HTTP/1-only server", r)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	if r := finish(t, start(t, Options{Addr: closed, Protocol: H2C, Concurrency: 1, Requests: 3})); r.Refused != 3 {
		t.Errorf("%v: want 3 refused", r)
	}
}

// wsServer is a WebSocket echo that ends every session after n messages
// as end says: with a close frame, or by closing the connection.
func wsServer(t *testing.T, n int, closeFrame bool) string {
	return rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Pid: 9\r\n\r\n",
			wsAccept(req.Header.Get("Sec-WebSocket-Key")))
		for i := 0; ; i++ {
			op, p, err := readMasked(br)
			if err != nil {
				return
			}
			if op == 8 {
				wsServerFrame(c, 8, p)
				return
			}
			if i == n {
				if closeFrame {
					wsServerFrame(c, 8, binary.BigEndian.AppendUint16(nil, 1001))
					readMasked(br) // the client's answer
				}
				return
			}
			wsServerFrame(c, op, p)
		}
	})
}

func readMasked(br *bufio.Reader) (byte, []byte, error) {
	var h [6]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	p := make([]byte, h[1]&0x7f) // short frames only
	if _, err := io.ReadFull(br, p); err != nil {
		return 0, nil, err
	}
	for i := range p {
		p[i] ^= h[2+i%4]
	}
	return h[0] & 0x0f, p, nil
}

func wsServerFrame(c net.Conn, op byte, p []byte) {
	c.Write(append([]byte{0x80 | op, byte(len(p))}, p...))
}

func TestWebSocket(t *testing.T) {
	t.Run("keep-alive", func(t *testing.T) {
		checkLeaks(t)
		// Each session echoes 4 messages, then says goodbye with a
		// close frame: the 5th is sent again on a new session.
		addr := wsServer(t, 4, true)
		r := finish(t, start(t, Options{Addr: addr, Protocol: WebSocket, Path: "/ws", Concurrency: 1, Requests: 10}))
		if r.OK != 10 || r.PIDs["9"] != 10 || r.CloseFrames != 2 {
			t.Errorf("%v, pids %v: want 10 ok and 2 sessions ended by a close frame", r, r.PIDs)
		}
	})
	t.Run("per-request", func(t *testing.T) {
		checkLeaks(t)
		addr := wsServer(t, 4, true)
		r := finish(t, start(t, Options{Addr: addr, Protocol: WebSocket, Mode: PerRequest, Concurrency: 2, Requests: 10}))
		if r.OK != 10 || r.CloseFrames != 0 {
			t.Errorf("%v: want 10 ok, each session closed by the client", r)
		}
	})
	t.Run("unclosed", func(t *testing.T) {
		checkLeaks(t)
		addr := wsServer(t, 2, false)
		r := finish(t, start(t, Options{Addr: addr, Protocol: WebSocket, Concurrency: 1, Requests: 6}))
		if r.OK != 4 || r.Unclosed != 2 {
			t.Errorf("%v: want 4 ok and 2 sessions ended without a close frame", r)
		}
	})
	t.Run("not a websocket", func(t *testing.T) {
		checkLeaks(t)
		addr, _ := httpServer(t, pidHandler)
		r := finish(t, start(t, Options{Addr: addr, Protocol: WebSocket, Concurrency: 1, Requests: 2}))
		if r.BadStatus != 2 {
			t.Errorf("%v: want 2 bad status from a handshake answered 200", r)
		}
	})
}

// grpcServer serves DefaultGRPCMethod (answering with x-pid: 5) and
// "/baton.hello.Hello/Fail" (answering with the code its request names).
func grpcServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handler := func(f func(ctx context.Context, in string) (string, error)) grpc.MethodHandler {
		return func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			out, err := f(ctx, in.Value)
			if err != nil {
				return nil, err
			}
			return wrapperspb.String(out), nil
		}
	}
	srv := grpc.NewServer()
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "baton.hello.Hello",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Say", Handler: handler(func(ctx context.Context, in string) (string, error) {
				grpc.SetHeader(ctx, metadata.Pairs("x-pid", "5"))
				return "hello " + in, nil
			})},
			{MethodName: "Fail", Handler: handler(func(context.Context, string) (string, error) {
				return "", status.Error(codes.ResourceExhausted, "no")
			})},
		},
	}, nil)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func TestGRPC(t *testing.T) {
	addr := grpcServer(t)
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			checkLeaks(t)
			r := finish(t, start(t, Options{Addr: addr, Protocol: GRPC, Mode: mode, Concurrency: 2, Requests: 20}))
			if r.OK != 20 || r.PIDs["5"] != 20 {
				t.Errorf("%v, pids %v: want 20 ok", r, r.PIDs)
			}
		})
	}
	t.Run("status", func(t *testing.T) {
		checkLeaks(t)
		r := finish(t, start(t, Options{Addr: addr, Protocol: GRPC, Path: "/baton.hello.Hello/Fail", Concurrency: 1, Requests: 2}))
		if r.BadStatus != 2 || !strings.Contains(r.Samples[0], "ResourceExhausted") {
			t.Errorf("%v: want 2 bad status (ResourceExhausted)", r)
		}
	})
	t.Run("refused", func(t *testing.T) {
		checkLeaks(t)
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		closed := ln.Addr().String()
		ln.Close()
		r := finish(t, start(t, Options{Addr: closed, Protocol: GRPC, Concurrency: 1, Requests: 2}))
		if r.Refused != 2 {
			t.Errorf("%v: want 2 refused", r)
		}
	})
}

func TestProtocolOptions(t *testing.T) {
	for _, o := range []Options{
		{Addr: "127.0.0.1:80", Protocol: HTTP2},
		{Addr: "127.0.0.1:80", Protocol: H2C, TLS: &tls.Config{}},
		{Addr: "127.0.0.1:80", TLS: &tls.Config{}},
		{Addr: "127.0.0.1:80", Protocol: numProtocols},
		{Addr: "127.0.0.1:80", Protocol: -1},
	} {
		if g, err := Start(context.Background(), o); err == nil {
			g.Stop()
			t.Errorf("Start(%+v) succeeded", o)
		}
	}
	for p := range numProtocols {
		if got, err := ParseProtocol(p.String()); got != p || err != nil {
			t.Errorf("ParseProtocol(%q) = %v, %v", p.String(), got, err)
		}
	}
	if _, err := ParseProtocol("spdy"); err == nil {
		t.Error("ParseProtocol(spdy) succeeded")
	}
	if s := Protocol(9).String(); s != "Protocol(9)" {
		t.Errorf("Protocol(9) = %q", s)
	}
}

func TestClassifyText(t *testing.T) {
	for s, want := range map[string]outcome{
		`rpc error: code = Unavailable desc = connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`: outRefused,
		`rpc error: code = Unavailable desc = connection error: desc = "error reading server preface: connection reset by peer"`:                            outReset,
		`stream error: stream ID 3; INTERNAL_ERROR; received from peer`:                                                                                     outReset,
		`http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=NO_ERROR, debug=""`:                                                   outEOF,
		`rpc error: code = Unavailable desc = error reading from server: EOF`:                                                                               outEOF,
		`http2: client connection lost`: outEOF,
		`something else`:                outOther,
	} {
		if got := classifyText(s); got != want {
			t.Errorf("classifyText(%q) = %v, want %v", s, got, want)
		}
	}
}
