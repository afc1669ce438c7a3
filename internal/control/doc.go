// Package control is baton's control protocol: what `baton reload`,
// `baton status` and the other commands send to a running baton over its
// unix socket, and how baton answers (docs/control.md).
//
// Every command is one row of Commands (commands.go): its name, its
// arguments and help on the command line, how a request is checked, the
// event it posts to the lifecycle Machine (or the state it reads), and
// the line its answer prints. cmd/baton's dispatch and usage, the
// server's parser and dispatch (server.go) and docs/control.md's list all
// come from that table; a test checks the doc against it. Adding a
// command is one row, plus its event and handler in internal/lifecycle.
//
// The rest are the pieces both ends share: the request, response, stats,
// status and log-line types (protocol.go, status.go), the client
// (client.go), and how a command finds a running baton's socket
// (discover.go). The supervisor owns the socket and the state the server
// answers from; this package holds no state of baton's.
package control
