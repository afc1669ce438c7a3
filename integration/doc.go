// Package integration holds baton's end-to-end tests: the real baton and
// hello binaries, real sockets on 127.0.0.1, real load from the load
// package, and real systemd in a throw-away container (nspawn package).
//
// The tests build the binaries themselves (with -race when the tests run
// with it), so `go test ./integration/` needs nothing prepared.
package integration
