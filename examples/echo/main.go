// Command echo is an example of a TCP and a UDP service under baton, on
// drain.ServeConns and drain.ServePackets. It answers every line of a
// connection on the inherited listener "tcp" with the same line, and
// every datagram on the inherited socket "udp" with the same datagram.
//
// When it drains, a connection's next line is answered with " bye"
// appended, and the connection closes: the client sends its next line on
// a new connection, to another worker (the protocol's own rule, as HTTP's
// "Connection: close"). A connection silent for a second after the drain
// began is closed. Datagrams still queued in the shared UDP socket are the
// other workers' to answer. (A UDP echo answers whatever source address a
// datagram claims: on an address others can reach, it should drop
// datagrams from ports it would not serve, as from another echo service.)
//
//	[[listen]]
//	name = "tcp"
//	address = "tcp://127.0.0.1:7000"
//	[[listen]]
//	name = "udp"
//	address = "udp://127.0.0.1:7000"
package main

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/batonhq/baton/drain"
	"github.com/batonhq/baton/handoff"
)

func main() {
	log.SetFlags(0)
	ln, err := handoff.Listener("tcp")
	if err != nil {
		log.Fatalf("echo: %v", err)
	}
	pc, err := handoff.PacketConn("udp")
	if err != nil {
		log.Fatalf("echo: %v", err)
	}
	udp := make(chan error, 1)
	go func() {
		// READY=1 and STOPPING=1 come from the TCP side, once.
		quiet := drain.Options{Notify: func(string) error { return nil }}
		udp <- drain.ServePackets(context.Background(), pc, 0, func(pc net.PacketConn, p []byte, from net.Addr) {
			pc.WriteTo(p, from)
		}, quiet)
	}()
	log.Printf("echo: serving on %s and %s", ln.Addr(), pc.LocalAddr())
	err = drain.ServeConns(context.Background(), ln, echo, drain.Options{})
	if uerr := <-udp; err == nil {
		err = uerr
	}
	if err != nil {
		log.Fatalf("echo: %v", err)
	}
}

// Limits on what one client can make a worker hold or wait for.
const (
	maxLine   = 64 << 10         // a longer line closes the connection
	idle      = time.Minute      // a connection silent this long is closed
	slowRead  = 10 * time.Second // to take an answer in, or be closed
	drainIdle = time.Second      // silent this long after the drain began: closed
)

// echo answers c's lines until the drain began, then its next one with
// " bye" and closes. A line longer than maxLine, a client silent for idle
// (drainIdle once the drain began) or one that takes no answer in for
// slowRead ends the connection: one client can neither fill the
// worker's memory nor hold its drain.
func echo(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now().Add(drainIdle)) })
	defer stop()
	r := bufio.NewReaderSize(c, maxLine)
	for {
		// The idle deadline first, then the check: a drain that began
		// in between has its own deadline set again here.
		c.SetReadDeadline(time.Now().Add(idle))
		if ctx.Err() != nil {
			c.SetDeadline(time.Now().Add(drainIdle))
		}
		line, err := r.ReadSlice('\n')
		if err != nil {
			return // bufio.ErrBufferFull: longer than maxLine
		}
		if ctx.Err() != nil {
			fmt.Fprintf(c, "%s bye\n", line[:len(line)-1])
			return
		}
		c.SetWriteDeadline(time.Now().Add(slowRead))
		if _, err := c.Write(line); err != nil {
			return
		}
	}
}
