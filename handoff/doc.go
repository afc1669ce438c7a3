// Package handoff is what a Go worker imports to take the sockets baton
// (or systemd) passed it: Listeners, Listener, PacketConns and PacketConn
// read LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID once and return the
// inherited sockets by name. It works the same under baton and directly
// under systemd socket activation, and links nothing of the supervisor.
package handoff
