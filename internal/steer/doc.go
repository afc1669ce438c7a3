// Package steer decides, under worker.balance = "reuseport", which socket
// of a listener's SO_REUSEPORT group each worker takes, which sockets a
// new connection may go to, which sockets are closed, and when a worker
// told to stop may be signalled (docs/balancing.md, "reuseport").
//
// Each TCP listener is a group of sockets that baton holds for its whole
// life, one per worker at a time: a new worker takes a socket no live
// worker holds, and another is bound beside the listener when there is
// none, so a reload's new worker never shares a socket with the one it
// replaces. A program attached to the group deals each new connection to
// the socket of a ready worker, in turn (internal/deal); where the kernel
// refuses to load it (baton without CAP_BPF), a classic BPF program
// (SO_ATTACH_REUSEPORT_CBPF) picks one at random. A worker about to be
// told to stop is first left out of the program, and is signalled once
// its socket's accept queue is empty and it has read from every
// connection it accepted (diag.go asks sock_diag): a server that drops at
// shutdown what it accepted but had not served yet drops nothing, and a
// socket no worker holds receives nothing.
//
// The classic program names sockets by their index in the kernel's
// group: a socket joins at the end when it listens, and one that leaves
// is replaced by the last (net/core/sock_reuseport.c). Group.Socks keeps
// that order, and a self-upgrade passes it on; the program's targets are
// indices in that order under either program (the dealer's keys are
// looked up from them). The groups are checked against the kernel's at
// every sweep and after a bind. Sockets of another process of the same
// user (it bound the port with SO_REUSEPORT) get nothing from either
// program, so steering goes on; the classic program's indices would shift
// if a socket left or joined before theirs, so under it baton binds and
// retires none while they are there. They are checked for again every
// RecheckEvery until they have gone, and then baton's program is attached
// again (the other process may have replaced it). A socket of baton's
// that stopped listening (a worker shut it down) is dropped under the
// dealer; under the classic program, whose order it changed, steering
// ends.
//
// The package is a model and a kernel file beside it, as lifecycle is a
// Machine and the supervisor's Env. Groups (steer.go, group.go) holds
// that state and performs no I/O: it learns the kernel's state (queue
// lengths, which sockets listen) and acts on it (bind, close, attach)
// through an Env, and takes the clock as an argument (Wait), so its
// tests (steer_test.go) drive any sequence of workers, routes,
// connections and intruders against a fake kernel, without a socket or a
// process. kernel.go is the Env's syscalls (Kernel), and the making of a
// group with its dealer (NewGroup); kernel_test.go tests it on real
// sockets. diag.go is the kernel's answer to which connections a worker
// has not read from (Kernel.Unserved, sock_diag and /proc), which the
// shell asks off its loop; diag_test.go tests it the same way.
package steer
