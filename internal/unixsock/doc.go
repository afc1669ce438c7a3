// Package unixsock creates the unix sockets baton answers on itself (the
// control socket, the notify socket), so that only their owner can use
// them from the moment they exist.
//
// A socket file takes its mode from the umask at bind(2): chmod after
// bind leaves a window in which, under a permissive umask, anyone may
// connect. Linux creates the file with the socket's own inode mode (masked
// by the umask), so the mode is set on the socket before it is bound.
package unixsock
