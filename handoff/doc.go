// Package handoff is what a Go worker imports to take the sockets baton
// (or systemd) passed it: Listeners, Listener, PacketConns and PacketConn
// read LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID once and return the
// inherited sockets by name. It works the same under baton and directly
// under systemd socket activation, and links nothing of the supervisor.
//
// Under baton's worker.balance = "round-robin", baton accepts the
// connections itself and passes them over a channel (BATON_CONNS_FD):
// Listener returns, under the listener's usual name, a net.Listener whose
// Accept yields those connections, so the worker's code does not change
// (but for a program that asserts *net.TCPConn: a passed connection has
// its methods, not its type; docs/balancing.md says why).
// Its Close waits (a second at most) for baton to say it passes no more
// and Accept still returns what came before; the wire format is in
// docs/balancing.md.
package handoff
