// Command loadgen runs package loadtest against a loopback address and prints
// one line of totals. It exits 1 if any request failed, 2 on bad usage.
//
//	loadgen -addr 127.0.0.1:8080 -c 32 -d 10s -mode keep-alive
//	loadgen -addr 127.0.0.1:8443 -proto h2 -insecure -d 10s
//	loadgen -addr 127.0.0.1:9090 -proto grpc -d 10s
//
// With -d 0 and -n 0 it runs until interrupted.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/batonhq/baton/loadtest"
)

func main() { os.Exit(run()) }

func run() int {
	var o loadtest.Options
	flag.StringVar(&o.Addr, "addr", "127.0.0.1:8080", "loopback `host:port` to load")
	flag.StringVar(&o.Path, "path", loadtest.DefaultPath, "request `path`")
	flag.IntVar(&o.Concurrency, "c", loadtest.DefaultConcurrency, "concurrent clients")
	flag.DurationVar(&o.Duration, "d", 0, "stop after this `duration` (0: no limit)")
	flag.Int64Var(&o.Requests, "n", 0, "stop after this many requests (0: no limit)")
	flag.DurationVar(&o.Timeout, "timeout", loadtest.DefaultTimeout, "per-request timeout")
	mode := flag.String("mode", loadtest.KeepAlive.String(), "keep-alive or per-request")
	proto := flag.String("proto", loadtest.HTTP1.String(), "http1, h2 (TLS), h2c, grpc or websocket")
	tlsOn := flag.Bool("tls", false, "use TLS (h2 always does; grpc with it)")
	insecure := flag.Bool("insecure", false, "with TLS, accept any server certificate (a self-signed one on loopback)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "loadgen: unexpected arguments %q\n", flag.Args())
		return 2
	}
	var err error
	if o.Mode, err = loadtest.ParseMode(*mode); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 2
	}
	if o.Protocol, err = loadtest.ParseProtocol(*proto); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 2
	}
	if *tlsOn || *insecure || o.Protocol == loadtest.HTTP2 {
		o.TLS = &tls.Config{InsecureSkipVerify: *insecure}
	}
	if o.Path == loadtest.DefaultPath && o.Protocol == loadtest.GRPC {
		o.Path = loadtest.DefaultGRPCMethod
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := loadtest.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 2
	}
	fmt.Println(r)
	for _, s := range r.Samples {
		fmt.Fprintln(os.Stderr, "  ", s)
	}
	if r.Failed() > 0 {
		return 1
	}
	return 0
}
