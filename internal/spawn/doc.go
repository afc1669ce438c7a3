// Package spawn starts baton's worker processes the way systemd starts a
// socket-activated service: the listeners at descriptors 3, 4, ... and
// LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID, so that a program that works
// under systemd works under baton unchanged.
//
// Go cannot run code between fork and exec, so each worker is started
// through a shim, baton re-executed as "baton exec-worker -- CMD..."
// (ExecWorker), which sets LISTEN_PID to its own pid, closes every other
// descriptor at exec, and replaces itself with the real command. A Spawner
// forks every worker from one OS thread that lives as long as it does,
// since the kernel sends a child's parent-death signal when the thread
// that forked it exits. DupFd duplicates a socket's descriptor without
// touching its blocking mode, which all holders of the socket share.
package spawn
