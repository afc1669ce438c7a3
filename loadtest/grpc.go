package loadtest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// grpcClient is one gRPC client making unary calls of Options.Path, with
// a google.protobuf.StringValue as request and response; the answering
// worker's pid is the "x-pid" header. In KeepAlive mode it keeps one
// grpc.ClientConn; in PerRequest mode each call gets one of its own.
//
// Retries configured by a service are off. gRPC still retries by
// itself, transparently, what the protocol says never reached the
// server or was not processed (streams above a GOAWAY's last one).
type grpcClient struct {
	opts Options
	cc   *grpc.ClientConn
	n    int // calls made, for distinct requests
}

func newGRPCClient(o Options) *grpcClient { return &grpcClient{opts: o} }

func (c *grpcClient) do() (string, error) {
	if c.cc == nil {
		cc, err := c.dial()
		if err != nil {
			return "", err
		}
		c.cc = cc
	}
	if c.opts.Mode == PerRequest {
		defer c.close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()
	c.n++
	msg := "call " + strconv.Itoa(c.n)
	var (
		resp wrapperspb.StringValue
		md   metadata.MD
	)
	err := c.cc.Invoke(ctx, c.opts.Path, wrapperspb.String(msg), &resp, grpc.Header(&md))
	if err != nil {
		return "", grpcError(err)
	}
	if resp.Value == "" {
		return "", fmt.Errorf("load: %s answered an empty string", c.opts.Path)
	}
	var pid string
	if v := md.Get("x-pid"); len(v) > 0 {
		pid = v[0]
	}
	return pid, nil
}

// grpcError turns a call's status into what classify understands: the
// deadline is a timeout, a status the server chose is a bad status, and
// Unavailable (the connection failed) is left to its text.
func grpcError(err error) error {
	s, _ := status.FromError(err)
	switch s.Code() {
	case codes.DeadlineExceeded:
		return fmt.Errorf("load: %w: %v", context.DeadlineExceeded, err)
	case codes.Unavailable, codes.Unknown, codes.Canceled:
		return fmt.Errorf("load: %w", err)
	}
	return &statusError{"grpc " + s.Code().String() + ": " + s.Message()}
}

func (c *grpcClient) dial() (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if c.opts.TLS != nil {
		creds = credentials.NewTLS(c.opts.TLS.Clone())
	}
	d := &net.Dialer{ControlContext: loopbackOnly, Timeout: c.opts.Timeout}
	return grpc.NewClient("passthrough:///"+c.opts.Addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}),
		grpc.WithDisableRetry(),
		// Fail fast, and do not wait long between reconnects: a
		// worker gone is replaced on the same socket at once.
		grpc.WithConnectParams(grpcConnect),
	)
}

func (c *grpcClient) close() {
	if c.cc != nil {
		c.cc.Close()
		c.cc = nil
	}
}

// grpcConnect is the clients' reconnect schedule.
var grpcConnect = grpcConnectParams()

func grpcConnectParams() grpc.ConnectParams {
	p := grpc.ConnectParams{MinConnectTimeout: 2 * time.Second}
	p.Backoff.BaseDelay = 10 * time.Millisecond
	p.Backoff.Multiplier = 1.6
	p.Backoff.MaxDelay = time.Second
	return p
}
