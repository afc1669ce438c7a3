package steer

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Unserved, against the kernel: a connection a process has accepted is
// unserved until it reads from it, whether its bytes have arrived or
// not (while it is young, if not); reading once serves it for good; a
// connection held by a child counts for the parent's tree and not for
// another process's; a half-closed one counts too; one at another port
// does not.
func TestUnserved(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Skip(err) // no IPv6 here
			}
			defer ln.Close()
			raw, err := ln.(*net.TCPListener).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var port Port
			raw.Control(func(fd uintptr) { port, err = PortOf(int(fd)) })
			if err != nil {
				t.Fatal(err)
			}
			self := os.Getpid()
			unserved := func(pid int) bool {
				t.Helper()
				u, err := Kernel{}.Unserved(pid, []Port{port}, time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				return u
			}
			if unserved(self) {
				t.Fatal("unserved with no connection")
			}

			client, server := connect(t, ln)
			if !unserved(self) {
				t.Error("an accepted connection whose client sent nothing yet is not unserved")
			}
			write(t, client, "GET / HTTP/1.1\r\n")
			if !unserved(self) {
				t.Error("an accepted connection with its request unread is not unserved")
			}
			buf := make([]byte, 64)
			if _, err := server.Read(buf); err != nil {
				t.Fatal(err)
			}
			if unserved(self) {
				t.Error("unserved after the server read the request")
			}
			write(t, client, "GET /next HTTP/1.1\r\n")
			if unserved(self) {
				t.Error("a connection read from before is unserved again when its next request waits")
			}

			// A connection accepted here and handed to a child, which
			// holds the only copy of it.
			_, passed := connect(t, ln)
			f, err := passed.(*net.TCPConn).File()
			if err != nil {
				t.Fatal(err)
			}
			child := startHolder(t, f)
			f.Close()
			passed.Close()
			other := startHolder(t, nil)
			if !unserved(self) || !unserved(child) {
				t.Error("a child's accepted connection does not count for its tree")
			}
			if unserved(other) {
				t.Error("another process's connection counts for a process that holds none")
			}
		})
	}

	t.Run("idle or elsewhere", func(t *testing.T) {
		ln, port := listen4(t)
		connect(t, ln)
		const young = 50 * time.Millisecond
		time.Sleep(2 * young) // the connection's age is the case
		if u, err := (Kernel{}).Unserved(os.Getpid(), []Port{port}, young); err != nil || u {
			t.Errorf("a connection that has received nothing for %v: Unserved = %v, %v; want false", 2*young, u, err)
		}

		other, _ := listen4(t)
		client, _ := connect(t, other)
		write(t, client, "GET / HTTP/1.1\r\n")
		if u, err := (Kernel{}).Unserved(os.Getpid(), []Port{port}, young); err != nil || u {
			t.Errorf("a request unread at another port: Unserved = %v, %v; want false", u, err)
		}
	})

	t.Run("half-closed", func(t *testing.T) {
		ln, port := listen4(t)
		client, _ := connect(t, ln)
		write(t, client, "GET / HTTP/1.0\r\n\r\n")
		client.(*net.TCPConn).CloseWrite()
		if u, err := (Kernel{}).Unserved(os.Getpid(), []Port{port}, time.Minute); err != nil || !u {
			t.Errorf("a request and a FIN unread: Unserved = %v, %v; want true", u, err)
		}
	})
}

// listen4 is a listener on 127.0.0.1, closed at the test's end, and its
// Port.
func listen4(t *testing.T) (net.Listener, Port) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, Port{unix.AF_INET, uint16(ln.Addr().(*net.TCPAddr).Port)}
}

// connect dials ln and accepts, both ends closed at the test's end.
func connect(t *testing.T, ln net.Listener) (client, server net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if server, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// startHolder starts a child that holds f (nil: nothing) until the
// test's end, and returns its pid.
func startHolder(t *testing.T, f *os.File) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if f != nil {
		cmd.ExtraFiles = []*os.File{f}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

// A reply cut anywhere, or with lengths that lie, is an error or is
// skipped, never a panic or a read past its end.
func TestParseDumpTruncated(t *testing.T) {
	ne := unix.SizeofNlMsghdr
	msg := make([]byte, ne+sizeofDiagMsg+unix.SizeofRtAttr+8)
	putHeader := func(b []byte, l int, typ uint16) {
		b[0], b[1], b[2], b[3] = byte(l), byte(l>>8), 0, 0
		b[4], b[5] = byte(typ), byte(typ>>8)
	}
	putHeader(msg, len(msg), unix.SOCK_DIAG_BY_FAMILY)
	attr := msg[ne+sizeofDiagMsg:]
	attr[0], attr[2] = 200, inetDiagInfo // longer than what follows
	for cut := range len(msg) + 1 {
		parseDump(msg[:cut], func(diagConn) {})
	}
	putHeader(msg, 3, unix.SOCK_DIAG_BY_FAMILY)
	if _, err := parseDump(msg, func(diagConn) {}); err == nil {
		t.Error("a message shorter than its header was taken")
	}
}
