// Package supervisor runs baton's worker pool: it holds the listening
// sockets, starts workers on them through the handoff shim, runs the
// notify and control sockets, and carries out what the lifecycle
// package's Machine decides (and, under reuseport, what the steer
// package decides of the listeners' SO_REUSEPORT groups).
//
// It decides nothing itself. One goroutine, the event loop in Run, owns
// the Machine and feeds it every event; the supervisor is the Machine's
// lifecycle.Env, forking, signalling and sending on its behalf. Its
// parts are Env's, each in the file named for it: processes.go,
// sockets.go, systemd.go and upgrade.go. The other goroutines only feed
// the loop events: the reaper (the one and only caller of wait4,
// turning every child exit into an event), the notify socket reader,
// timers, the control server, the self-upgrade's tasks, and per-worker
// output forwarders, which own nothing but their pipe.
package supervisor
