// Package loadtest is a loopback load generator that counts and classifies
// the failures a non-retrying client sees: HTTP/1.1, HTTP/2 (over TLS, and
// h2c), gRPC unary calls and WebSocket echo sessions (Options.Protocol).
//
// It exists to prove that a reload loses no request. Go's http.Transport
// silently retries idempotent requests on reused connections, which would
// hide exactly the failures a reload can cause, so this package speaks
// HTTP/1.1 itself: each client dials, writes a GET, reads the response with
// http.ReadResponse and drains the body, and never retries. Every attempt is
// counted once, as OK (a 200 with its full body) or as one kind of failure
// (refused, reset, EOF, timeout, bad status, other).
//
// The other protocols use the ecosystem's own clients, which retry by
// themselves only what their protocol says was never processed: net/http's
// HTTP/2 client, with HTTP/1 turned off, resends a request above a GOAWAY's
// last stream; gRPC (service retries off) resends a call that never left
// the client or that a GOAWAY said was not processed. A WebSocket request
// is one text message and its echo, spoken by this package; a session the
// server ends with a close frame (Result.CloseFrames) is the protocol's
// goodbye, and the message is sent again on a new session, while a
// session that ends any other way fails the message in flight (as
// unclosed, for an end of stream without a close frame). Errors that
// carry no error value (HTTP/2's and gRPC's about the connection) are
// classified by their text.
//
// Start launches Options.Concurrency clients in one of two modes: KeepAlive
// reuses one connection per client, PerRequest dials a new connection for
// every request. A run ends after Options.Duration, after Options.Requests
// attempts, when its context is done, or on Generator.Stop; a request in
// flight when the run ends is allowed to finish and is counted as whatever
// it turns out to be. Snapshot and WaitOK let a test watch the counters while
// the load flows; Run is Start, wait for the end, Stop.
//
// Only loopback addresses are accepted: the package is for integration tests
// and benchmarks on one machine, never for loading another host.
package loadtest
