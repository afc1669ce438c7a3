package draintest

import (
	"bufio"
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// EchoLoad is clients of a line echo service over TCP or a datagram echo
// service over UDP (as examples/echo is), each sending one message after
// another and checking the answer, until Stop. Over TCP a line answered
// with " bye" appended counts as answered, and the client opens a new
// connection for its next line (the service's way of leaving); any other
// answer, an error or a closed connection is a failure. Over UDP a
// datagram not answered within a second is lost.
type EchoLoad struct {
	clients
	// Byes counts the TCP answers that said bye; Lost the UDP
	// datagrams never answered.
	Byes, Lost atomic.Int64
}

// StartEchoLoad starts n clients of network ("tcp" or "udp") at addr.
func StartEchoLoad(n int, network, addr string) *EchoLoad {
	l := &EchoLoad{clients: newClients()}
	l.run(n, func(i int) {
		if network == "udp" {
			l.datagrams(i, addr)
		} else {
			l.lines(i, network, addr)
		}
	})
	return l
}

func (l *EchoLoad) lines(i int, network, addr string) {
	var c net.Conn
	var r *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for n := 0; !l.stopped(); n++ {
		if c == nil {
			var err error
			if c, err = net.Dial(network, addr); err != nil {
				l.fail(err)
				return
			}
			r = bufio.NewReader(c)
		}
		want := fmt.Sprintf("client %d line %d", i, n)
		fmt.Fprintf(c, "%s\n", want)
		got, err := r.ReadString('\n')
		switch {
		case err == nil && got == want+"\n":
			l.OK.Add(1)
			continue
		case err == nil && got == want+" bye\n":
			l.OK.Add(1)
			l.Byes.Add(1)
		default:
			l.fail(fmt.Errorf("line %q: answer %q, %v", want, got, err))
		}
		c.Close()
		c = nil
	}
}

func (l *EchoLoad) datagrams(i int, addr string) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		l.fail(err)
		return
	}
	defer c.Close()
	buf := make([]byte, 256)
	for n := 0; !l.stopped(); n++ {
		want := fmt.Sprintf("client %d datagram %d", i, n)
		c.Write([]byte(want))
		c.SetReadDeadline(time.Now().Add(time.Second))
		m, err := c.Read(buf)
		switch {
		case err != nil:
			l.Lost.Add(1)
		case string(buf[:m]) != want:
			l.fail(fmt.Errorf("datagram %q answered %q", want, buf[:m]))
		default:
			l.OK.Add(1)
		}
	}
}
