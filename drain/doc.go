// Package drain serves HTTP in a Go worker and, when told to stop, drains it
// without failing a single request of a client that does not retry.
//
// Serve runs an http.Server on a listener (typically one from
// handoff.Listener), tells the supervisor READY=1 over sd_notify, and on
// SIGTERM (or when its context is done) drains:
//
//  1. STOPPING=1, and from now on every response carries "Connection: close",
//     so net/http closes each connection right after its next response;
//  2. the listener is closed: only this process's copy of the socket, which
//     every other worker keeps accepting from, so no connection is refused;
//  3. every connection is followed through net/http's states. One that is
//     idle (between keep-alive requests, or accepted but with no request
//     yet) is closed only once it has been idle for Options.IdleGrace: a
//     busy keep-alive client sends its next request long before that and
//     gets it answered, with "Connection: close";
//  4. when no connection is left Serve returns nil; at Options.Timeout it
//     closes whatever is left (a stream, a stuck client) and returns an
//     error wrapping ErrForced.
//
// Why not http.Server.Shutdown or SetKeepAlivesEnabled(false): both close
// idle keep-alive connections at once, and a client may be sending its next
// request on one at that very moment. It gets a reset or an EOF instead of
// a response: the keep-alive race that makes naive reloads lose requests.
//
// The grace does not remove that race for a client that stays silent for the
// whole grace and then writes just as its connection is closed; HTTP/1.1
// gives a server no way to close a connection atomically with respect to a
// client's write. Serve narrows it to the network round trip: it ends an
// idle wait through a read deadline, so net/http's own goroutine closes the
// connection, and a request that has already reached this host's kernel by
// then is served instead (see conn.Read).
//
// A connection in the middle of receiving a request is waited for, like one
// whose response is being written: http.Server.ReadHeaderTimeout, or the
// deadline, ends a client that stalls. Signals during the drain are
// ignored; the deadline ends it.
//
// A panic is a reason to drain too. Serve runs every handler under a Guard:
// a handler that panics is reported with its stack (Guard.OnPanic, to
// stderr by default), its request gets a 500 (or, if its response had
// started, a closed connection), and Serve sends STOPPING=1, drains as
// above and returns an error wrapping ErrPanicked, so that the worker exits
// non-zero and its supervisor, told by STOPPING=1, has started a
// replacement already. Guard.Go runs a goroutine under the same guard.
// Only the request that panicked fails.
//
// HTTP/2 connections (TLS with ALPN "h2", and h2c when srv.Protocols
// allows unencrypted HTTP/2) are sent away by GOAWAY, the protocol's own
// answer to the keep-alive race, in the two steps of RFC 9113 §6.8. A
// first GOAWAY carries the largest stream id: no new streams, please. A
// PING follows it; once the client has answered (or a second later if it
// does not), the final GOAWAY carries the last stream served. So the
// streams a client opened while the first GOAWAY was on its way are
// served, not refused, and a client that would not retry them (h2load,
// curl, most proxies; Go's own client does) loses none. The first GOAWAY
// itself waits for a moment when the client has read everything sent
// before it: a first PING, whose answer the server's output waits for
// (a second and 64 KiB at most). A client that reads a GOAWAY behind
// responses refuses, itself, the requests those responses had it queue.
// Each connection then finishes its streams and closes; one that is idle,
// sent its final GOAWAY and 400 ms past its first is closed.
//
// net/http's HTTP/2 server sends only the final GOAWAY, and so does
// golang.org/x/net/http2's (the same code; from Go 1.27 on, a wrapper of
// net/http's). Serve writes the PINGs and the first GOAWAY itself, between
// two of the server's frames, and has net/http send the final one
// (http2.go says how). It needs net/http's own HTTP/2 for that: it leaves
// a server with TLSNextProto set (its own HTTP/2, or HTTP/2 turned off)
// as it is, and then those connections are drained as HTTP/1 ones are,
// by the idle grace and the deadline. srv.Shutdown by the caller sends
// HTTP/2 connections away as the drain does.
//
// Connections from a TLS listener (*tls.Conn) are drained the same way
// except for the receive queue check. A hijacked connection (a WebSocket)
// belongs to its handler: Draining tells the handler that the drain began,
// so that it can end the conversation as its protocol says (a close
// frame), and Serve waits for every handler to return, within the
// deadline.
//
// ServeConns and ServePackets do the same for a protocol of the caller's
// own over TCP (or a unix stream socket) and over UDP: READY=1, and on a
// stop signal STOPPING=1, this process's copy of the socket closed (for
// UDP: no more reads, the socket's queue left to the workers that share
// it), each connection's handler told through its context, and a wait for
// the handlers within the deadline.
//
// ServeFunc gives that lifecycle (READY=1, the stop signals, STOPPING=1,
// the deadline, the guard) to a server of another kind, which drains in
// its protocol's own way; package grpcdrain is it for a grpc.Server, so
// that this package does not depend on gRPC.
package drain
