package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/drain"
	"github.com/batonhq/baton/handoff"
)

func main() {
	log.SetFlags(0)
	listen := flag.String("listen", "", "bind `ADDR` (host:port) with SO_REUSEPORT instead of using an inherited listener")
	name := flag.String("name", "http", "`NAME` of the inherited listener to serve (the only one, if none has that name)")
	h2c := flag.Bool("h2c", false, "also serve HTTP/2 without TLS (prior knowledge)")
	cert := flag.String("cert", "", "serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with the certificate in `FILE` (PEM), and -key")
	key := flag.String("key", "", "the private key of -cert, in `FILE` (PEM)")
	flag.Parse()
	if flag.NArg() > 0 {
		log.Fatalf("hello: unexpected arguments %q", flag.Args())
	}

	ln, err := listener(*listen, *name)
	if err != nil {
		log.Fatal(err)
	}
	if *cert != "" || *key != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			log.Fatalf("hello: -cert, -key: %v", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2", "http/1.1"}})
	}
	pid := strconv.Itoa(os.Getpid())
	srv := &http.Server{
		Handler: routes(pid),
		// A client that never finishes its request headers must not hold
		// a drain until its deadline.
		ReadHeaderTimeout: 10 * time.Second,
	}
	if *h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	log.Printf("hello: serving on %s pid %s", ln.Addr(), pid)
	if err := drain.Serve(context.Background(), srv, ln, drain.Options{}); err != nil {
		log.Fatalf("hello: %v", err)
	}
}

// listener binds addr, or else returns the inherited listener called name,
// or else the only inherited listener.
func listener(addr, name string) (net.Listener, error) {
	if addr != "" {
		lc := net.ListenConfig{Control: reusePort}
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("hello: %w", err)
		}
		return ln, nil
	}
	ln, err := handoff.Listener(name)
	if errors.Is(err, handoff.ErrNoListeners) {
		return nil, fmt.Errorf("hello: %w: run under baton or systemd socket activation, or use -listen ADDR", err)
	}
	if err != nil {
		if all, lerr := handoff.Listeners(); lerr == nil && len(all) == 1 {
			for _, only := range all {
				return only, nil
			}
		}
		return nil, fmt.Errorf("hello: %w", err)
	}
	return ln, nil
}

// reusePort sets SO_REUSEPORT, so that copies of hello can bind the same
// address and the kernel spreads connections over them.
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt SO_REUSEPORT", serr)
}

// ballast is memory /grow allocated and keeps, to make this worker big
// (for baton's worker.max_memory).
var (
	ballastMu sync.Mutex
	ballast   [][]byte
)

// grow allocates mb MiB more and touches every page, so it is resident.
func grow(mb int) {
	b := make([]byte, mb<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	ballastMu.Lock()
	ballast = append(ballast, b)
	ballastMu.Unlock()
}

// routes answers as the package documentation says, with X-Pid: pid.
func routes(pid string) http.Handler {
	hello := "hello from pid " + pid + "\n"
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, hello)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 {
			http.Error(w, "hello: /slow wants ms=N (milliseconds, N >= 0)", http.StatusBadRequest)
			return
		}
		// Tests wait for this line to know the request reached a handler.
		log.Printf("hello: slow request started (%d ms)", ms)
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
			io.WriteString(w, hello)
		case <-r.Context().Done(): // the client left or the server was closed
		}
	})
	mux.HandleFunc("/ws", websocket)
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) {
		panic("hello: /panic requested")
	})
	mux.HandleFunc("/grow", func(w http.ResponseWriter, r *http.Request) {
		mb, err := strconv.Atoi(r.URL.Query().Get("mb"))
		if err != nil || mb < 0 || mb > 4096 {
			http.Error(w, "hello: /grow wants mb=N (MiB to allocate and keep, 0 <= N <= 4096)", http.StatusBadRequest)
			return
		}
		grow(mb)
		io.WriteString(w, hello)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		s, err := strconv.Atoi(r.URL.Query().Get("s"))
		if err != nil || s < 0 {
			http.Error(w, "hello: /stream wants s=N (seconds, N >= 0)", http.StatusBadRequest)
			return
		}
		rc := http.NewResponseController(w)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := range s * 10 {
			if _, err := fmt.Fprintf(w, "%d %s", i, hello); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
		}
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", pid)
		mux.ServeHTTP(w, r)
	})
}
