// Package loadtest is a loopback HTTP/1.1 load generator that counts and
// classifies the failures a non-retrying client sees.
//
// It exists to prove that a reload loses no request. Go's http.Transport
// silently retries idempotent requests on reused connections, which would
// hide exactly the failures a reload can cause, so this package speaks
// HTTP/1.1 itself: each client dials, writes a GET, reads the response with
// http.ReadResponse and drains the body, and never retries. Every attempt is
// counted once, as OK (a 200 with its full body) or as one kind of failure
// (refused, reset, EOF, timeout, bad status, other).
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
