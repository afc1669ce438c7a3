// Package handoff passes listening sockets from baton to its workers and
// lets a Go worker take them back by name.
//
// The supervisor side (Spawner, ExecWorker, Env) starts a worker with the
// listeners at descriptors 3, 4, ... and systemd's socket-activation
// variables, exactly as systemd would start a socket-activated service: a
// program that works under systemd works under baton unchanged. Go cannot
// run code between fork and exec, so each worker is started through a shim
// (baton re-executed as "baton exec-worker -- CMD...") that sets LISTEN_PID to
// its own pid and then replaces itself with the real command.
//
// The worker side (Listeners, Listener, PacketConns, PacketConn) reads those
// variables once and returns the inherited sockets by name; it works the
// same under baton and directly under systemd.
package handoff
