// Package wire is the line format of round-robin's channel, between
// baton (internal/roundrobin) and a Go worker (handoff): the line that
// carries a connection and the worker's answer (the handoff package
// documents the format). Both sides read and write a line once per
// connection, so the lines in the form baton and handoff write are read
// and written without reflection; any other form (a Node.js worker's, a
// hand-written one) is read as JSON, with the same outcome. And the
// socket options a passed connection inherits from baton's listener.
package wire
