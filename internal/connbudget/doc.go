// Package connbudget serves an HTTP/1 server's connections within a fixed
// budget that clients who connect and then send nothing cannot use up.
//
// A Listener hands its server at most a given number of connections at
// once. A connection that arrives with the budget full is closed at once
// unless its first bytes, still in the kernel, are a whole request head
// (or 1 KiB of one): probes and scrapes send their request in one piece.
// One that brought a request takes the place of the connection that has
// waited longest without a request to serve: one that is reading for a
// request (just accepted, or idle between keep-alive requests) or
// finishing a response its handler has written. A connection in a
// handler is never closed to make room, and neither is one whose request
// has reached the kernel but not yet been read: its goroutine is about to
// take it. If no connection may go, Accept waits until one closes, leaves
// its handler or reads, and what arrives meanwhile waits in the kernel's
// queue.
//
// So a client that holds connections open costs a newcomer only the close
// of one of them, and a request that arrives is served within the time it
// takes to turn away what queued ahead of it, however many such clients
// there are. The listening socket also gets TCP_DEFER_ACCEPT: the kernel
// queues a connection once its first data arrives, or after a second
// without any, so a silent client reaches the server a second late.
//
// The time a handler takes is the handler's to bound (the server's
// timeouts, a limit on slow handlers): the budget only decides which idle
// connection goes.
package connbudget
