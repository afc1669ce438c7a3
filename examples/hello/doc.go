// Command hello is baton's demo worker. It answers every request with
// "hello from pid N" and an X-Pid header, takes its listener from baton or
// systemd socket activation (handoff), and drains gracefully on SIGTERM or
// a panic (drain).
//
//	hello [-name http]          serve the inherited listener named "http"
//	hello -listen 127.0.0.1:8080  bind it itself, with SO_REUSEPORT, so that
//	                            several copies can run side by side (the
//	                            no-supervisor baseline)
//	hello -h2c                  also speak HTTP/2 without TLS
//	hello -cert FILE -key FILE  serve HTTPS, HTTP/2 or HTTP/1.1 by ALPN
//
// Under drain, HTTP/2 clients are sent away by a two-step GOAWAY when
// hello drains (docs/protocols.md).
//
// Routes, besides every other path answering hello:
//
//	/slow?ms=N    wait N milliseconds, then answer
//	/stream?s=N   write a line every 100ms for N seconds, flushing each
//	/grow?mb=N    allocate N MiB more and keep it (to test max_memory)
//	/ws           a WebSocket echo; when hello drains, each session gets
//	              a close frame (1001, going away) from it
//	/panic        panic: the request gets a 500, hello says STOPPING=1,
//	              drains (requests in flight finish) and exits 1
package main
