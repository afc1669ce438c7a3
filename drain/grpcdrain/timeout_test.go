package grpcdrain

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestUserTimeout: a TCP connection Serve accepts has the TCP_USER_TIMEOUT
// gRPC would have given it, had conn not hidden it from gRPC.
func TestUserTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := &listener{Listener: ln, taken: make(chan struct{}, 1), conns: map[*conn]struct{}{}}
	defer tl.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	accepted, err := tl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	raw, err := accepted.(*conn).Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ms int
	raw.Control(func(fd uintptr) { ms, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT) })
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(ms) * time.Millisecond; got != 20*time.Second {
		t.Errorf("TCP_USER_TIMEOUT = %v, want gRPC's default keepalive timeout, 20s", got)
	}
}
