// Package supervisor runs baton's worker pool: it holds the listening
// sockets, starts workers on them through the handoff shim, tracks their
// readiness over the notify socket, replaces workers that leave, and drains
// them on stop.
//
// One goroutine, the event loop in Run, owns all of the supervisor's state.
// The other goroutines only feed it events: the reaper (the one and only
// caller of wait4, turning every child exit into an event), the notify
// socket reader, timers, and per-worker output forwarders, which own
// nothing but their pipe.
package supervisor
