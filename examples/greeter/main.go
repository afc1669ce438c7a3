// Command greeter is a gRPC worker for baton, on package grpcdrain: the
// gRPC counterpart of examples/hello. It serves the service
// baton.hello.Hello on the inherited listener named by -name (the only
// one, if none has that name), in plain text or, with -cert and -key,
// over TLS:
//
//	Say(StringValue) StringValue    "hello from pid N: " and the request
//	Slow(StringValue) StringValue   the same after the milliseconds the request names
//	Panic(StringValue) StringValue  panics: the call fails with Internal and the worker drains
//
// Requests and responses are google.protobuf.StringValue; every answer
// carries the header "x-pid". The service is written out by hand (what
// protoc-gen-go-grpc would generate from a .proto of three methods), so
// the example needs no generated code. On SIGTERM it drains as
// grpcdrain.Serve does and exits 0, or 1 if the deadline cut calls.
//
//	[[listen]]
//	name = "grpc"
//	address = "tcp://127.0.0.1:9090"
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/batonhq/baton/drain"
	"github.com/batonhq/baton/drain/grpcdrain"
	"github.com/batonhq/baton/handoff"
)

func main() {
	log.SetFlags(0)
	name := flag.String("name", "grpc", "`NAME` of the inherited listener to serve (the only one, if none has that name)")
	cert := flag.String("cert", "", "serve over TLS with the certificate in `FILE` (PEM), and -key")
	key := flag.String("key", "", "the private key of -cert, in `FILE` (PEM)")
	flag.Parse()
	if flag.NArg() > 0 {
		log.Fatalf("greeter: unexpected arguments %q", flag.Args())
	}
	ln, err := listener(*name)
	if err != nil {
		log.Fatalf("greeter: %v", err)
	}
	g := new(drain.Guard)
	opts := grpcdrain.Guard(g)
	if *cert != "" || *key != "" {
		creds, err := credentials.NewServerTLSFromFile(*cert, *key)
		if err != nil {
			log.Fatalf("greeter: -cert, -key: %v", err)
		}
		opts = append(opts, grpc.Creds(creds))
	}
	srv := grpc.NewServer(opts...)
	srv.RegisterService(&helloService, hello{pid: strconv.Itoa(os.Getpid())})

	log.Printf("greeter: serving on %s pid %d", ln.Addr(), os.Getpid())
	if err := grpcdrain.Serve(context.Background(), srv, ln, drain.Options{Guard: g}); err != nil {
		log.Fatalf("greeter: %v", err)
	}
}

// listener returns the inherited listener called name, or else the only
// one.
func listener(name string) (net.Listener, error) {
	ln, err := handoff.Listener(name)
	if err != nil && !errors.Is(err, handoff.ErrNoListeners) {
		if all, lerr := handoff.Listeners(); lerr == nil && len(all) == 1 {
			for _, only := range all {
				return only, nil
			}
		}
	}
	return ln, err
}

// hello is the service: what protoc-gen-go-grpc would have the
// programmer write.
type hello struct{ pid string }

func (h hello) say(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	grpc.SetHeader(ctx, metadata.Pairs("x-pid", h.pid))
	return wrapperspb.String("hello from pid " + h.pid + ": " + in.Value), nil
}

func (h hello) slow(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	ms, err := strconv.Atoi(in.Value)
	if err != nil || ms < 0 {
		return nil, status.Error(codes.InvalidArgument, "greeter: Slow wants a number of milliseconds >= 0")
	}
	// Tests wait for this line to know the call reached a handler.
	log.Printf("greeter: slow call started (%d ms)", ms)
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return h.say(ctx, in)
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (h hello) panic(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	panic("greeter: Panic called")
}

// helloServer is the service's handler type, as generated code has one.
type helloServer interface {
	say(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
	slow(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
	panic(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

// helloService is the description of baton.hello.Hello that generated
// code would hold; loadtest.DefaultGRPCMethod is its Say.
var helloService = grpc.ServiceDesc{
	ServiceName: "baton.hello.Hello",
	HandlerType: (*helloServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Say", Handler: unary("Say", helloServer.say)},
		{MethodName: "Slow", Handler: unary("Slow", helloServer.slow)},
		{MethodName: "Panic", Handler: unary("Panic", helloServer.panic)},
	},
}

// unary makes the handler of the method name, m, as generated code does
// for each method: decode the request, run the interceptor (the guard)
// around m.
func unary(name string, m func(helloServer, context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.StringValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		h := srv.(helloServer)
		call := func(ctx context.Context, req any) (any, error) {
			return m(h, ctx, req.(*wrapperspb.StringValue))
		}
		if icpt == nil {
			return call(ctx, in)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/baton.hello.Hello/" + name}
		return icpt(ctx, in, info, call)
	}
}
