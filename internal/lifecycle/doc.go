// Package lifecycle decides what baton's supervisor does. Its Machine
// holds the supervisor's whole state (the generations of workers, the
// reload under way, the restart budget, the phase of baton's own life)
// and performs no I/O: it is fed events (a worker exited, a notify
// message, a timer fired, a reload or stop request, a self-upgrade's
// outcome) through Step and carries out its decisions (start a worker,
// signal a process, arm a timer, notify systemd, answer a request)
// through the Env it was given.
//
// The supervisor package owns the sockets, the processes and the
// goroutines: its event loop is the one goroutine that calls Step, and
// its Env forks, signals and sends. Tests give the Machine a fake Env
// with a fake clock and drive any sequence of events without forking a
// process (machine_test.go). A test checks that no file here imports a
// package that does I/O.
package lifecycle
