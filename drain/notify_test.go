package drain

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"
)

// Serve says with READY=1 that it serves what it accepted
// (DrainsAcceptedField) when it keeps a connection with no request yet
// for a second or more (its idle grace), and not when it keeps one for
// less; ServeConns says it only when told to (Options.DrainsAccepted).
func TestReadyDeclaresDrainsAccepted(t *testing.T) {
	declared := "READY=1\n" + DrainsAcceptedField
	for _, tc := range []struct {
		name  string
		serve func(ctx context.Context, ln net.Listener, opts Options) error
		opts  Options
		want  string
	}{
		{"Serve", serveHTTP, Options{}, declared},
		{"Serve, grace 2s", serveHTTP, Options{IdleGrace: 2 * time.Second}, declared},
		{"Serve, grace 200ms", serveHTTP, Options{IdleGrace: 200 * time.Millisecond}, "READY=1"},
		{"ServeConns", serveConns, Options{}, "READY=1"},
		{"ServeConns, declared", serveConns, Options{DrainsAccepted: true}, declared},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			states := make(chan string, 4)
			tc.opts.Notify = func(s string) error { states <- s; return nil }
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- tc.serve(ctx, ln, tc.opts) }()
			if got := <-states; got != tc.want {
				t.Errorf("READY datagram %q, want %q", got, tc.want)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func serveHTTP(ctx context.Context, ln net.Listener, opts Options) error {
	return Serve(ctx, &http.Server{}, ln, opts)
}

func serveConns(ctx context.Context, ln net.Listener, opts Options) error {
	return ServeConns(ctx, ln, func(context.Context, net.Conn) {}, opts)
}
