package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/batonhq/baton/drain/draintest"
	"github.com/batonhq/baton/loadtest"
)

// roleEnv makes the re-executed test binary run main instead of the tests.
const roleEnv = "GREETER_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startGreeter runs greeter (this test binary as main) on s with args and
// returns once it serves.
func startGreeter(t *testing.T, s draintest.Socket, env []string, args ...string) *draintest.Worker {
	t.Helper()
	env = append(env, roleEnv+"=1", "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	w := draintest.Start(t, append([]string{os.Args[0]}, args...), []draintest.Socket{s}, env...)
	want := fmt.Sprintf(" pid %d", w.Pid)
	if line := w.Serving(t, "greeter: serving on "); !strings.HasSuffix(line, want) {
		t.Fatalf("start line %q, want it to end with %q", line, want)
	}
	return w
}

// TestDrainUnderLoad: two greeters share one socket, as under baton; one
// gets SIGTERM while 32 gRPC clients that do not retry call it, in plain
// text and over TLS: no call fails, and the drained one is gone at once
// (its clients sent away by GOAWAY).
func TestDrainUnderLoad(t *testing.T) {
	cert := draintest.SelfSigned(t)
	certFile, keyFile := cert.Files(t)
	for _, tc := range []struct {
		name string
		tls  *tls.Config
		args []string
	}{
		{"plain", nil, nil},
		{"tls", &tls.Config{RootCAs: cert.Pool}, []string{"-cert", certFile, "-key", keyFile}},
	} {
		for _, mode := range []loadtest.Mode{loadtest.KeepAlive, loadtest.PerRequest} {
			if tc.tls != nil && mode == loadtest.PerRequest {
				continue // a TLS handshake per call: slow under -race, and plain per-request has the churn
			}
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				o := loadtest.Options{Protocol: loadtest.GRPC, Mode: mode, TLS: tc.tls}
				draintest.DrainLoad(t, o, func(t *testing.T, s draintest.Socket) *draintest.Worker {
					return startGreeter(t, s, nil, tc.args...)
				})
			})
		}
	}
}

// call makes one call of method on addr.
func call(t *testing.T, addr, method, in string) (string, error) {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), draintest.EventTimeout)
	defer cancel()
	var out wrapperspb.StringValue
	err = cc.Invoke(ctx, "/baton.hello.Hello/"+method, wrapperspb.String(in), &out)
	return out.Value, err
}

// TestPanic: a panicking call fails with Internal, the worker drains (the
// call in flight finishes) and exits non-zero, saying why.
func TestPanic(t *testing.T) {
	ln, s := draintest.Listen(t, "grpc")
	w := startGreeter(t, s, nil)
	addr := ln.Addr().String()
	slow := make(chan error, 1)
	go func() {
		_, err := call(t, addr, "Slow", "500")
		slow <- err
	}()
	w.Serving(t, "greeter: slow call started")
	if _, err := call(t, addr, "Panic", ""); status.Code(err) != codes.Internal {
		t.Errorf("Panic: %v, want Internal", err)
	}
	if err := <-slow; err != nil {
		t.Errorf("the call in flight: %v", err)
	}
	if line := w.Serving(t, "greeter: "); !strings.Contains(line, "panic") {
		t.Errorf("last words %q, want the panic named", line)
	}
	if st := w.Wait(t); st != 1 {
		t.Errorf("exit status %d after a panic, want 1", st)
	}
}

// TestDeadline: with BATON_DRAIN_TIMEOUT, a call that outlasts it is cut
// at the deadline and the worker exits 1.
func TestDeadline(t *testing.T) {
	ln, s := draintest.Listen(t, "grpc")
	w := startGreeter(t, s, []string{"BATON_DRAIN_TIMEOUT=300ms"})
	cut := make(chan error, 1)
	go func() {
		_, err := call(t, ln.Addr().String(), "Slow", "60000")
		cut <- err
	}()
	w.Serving(t, "greeter: slow call started")
	began := time.Now()
	w.Signal(t, syscall.SIGTERM)
	if st := w.Wait(t); st != 1 {
		t.Errorf("exit status %d after a forced drain, want 1", st)
	}
	if took := time.Since(began); took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("exited %v after SIGTERM, want at the 300ms deadline", took)
	}
	if err := <-cut; status.Code(err) != codes.Unavailable {
		t.Errorf("the call the deadline cut: %v, want Unavailable", err)
	}
}

// TestNoListener: without a socket greeter says so and exits 1.
func TestNoListener(t *testing.T) {
	w := draintest.Start(t, []string{os.Args[0]}, nil, roleEnv+"=1")
	if line := w.Line(t); !strings.Contains(line, "greeter:") {
		t.Errorf("said %q", line)
	}
	if st := w.Wait(t); st != 1 {
		t.Errorf("exit status %d, want 1", st)
	}
}
