package steer

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/deal"
)

// These tests are the kernel file's: real sockets on 127.0.0.1, and what
// the model takes for granted of the kernel checked against it.

// reusePortSocket is a listening SO_REUSEPORT socket on 127.0.0.1:port
// (0: any), closed at the test's end.
func reusePortSocket(t *testing.T, port int) (fd int, bound int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	return fd, sa.(*unix.SockaddrInet4).Port
}

// bind is Kernel.Bind, its socket closed at the test's end.
func bind(t *testing.T, beside int) int {
	t.Helper()
	fd, err := Kernel{}.Bind(beside)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// dial opens n connections to port, closed at the test's end, and waits
// until the kernel has queued them all in fds.
func dial(t *testing.T, port int, fds []int, n int) {
	t.Helper()
	total := func() int {
		sum := 0
		for _, fd := range fds {
			sum += int(Kernel{}.Queued(fd))
		}
		return sum
	}
	was := total()
	for range n {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	for deadline := time.Now().Add(5 * time.Second); total() < was+n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections queued, want %d", total(), was+n)
		}
	}
}

// A socket from systemd may still be in the maps of the program a baton
// that exited attached: the next baton's dealer takes it once that
// program is detached, and not before.
func TestDealerAfterARestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the dealer needs CAP_BPF: run as root")
	}
	fd, _ := reusePortSocket(t, 0)
	before, err := deal.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := before.Add(fd); err != nil {
		t.Fatal(err)
	}
	if err := before.Attach(fd); err != nil {
		t.Fatal(err)
	}
	before.Close() // it exited; its program stays attached
	if g := NewGroup("http", fd, false, true); g.Deal != nil || !strings.Contains(g.Random, "busy") {
		t.Fatalf("a dealer took a socket another program's map holds (random %q)", g.Random)
	}
	g := NewGroup("http", fd, true, true)
	if g.Deal == nil {
		t.Fatalf("no dealer after the old program was detached: %s", g.Random)
	}
	if _, ok := g.DealerFds(); !ok {
		t.Error("no descriptors to pass on for the dealer")
	}
	g.Deal.Close()
	if g := NewGroup("http", fd, true, false); g.Deal != nil || g.Random != "turned off" {
		t.Errorf("a group not dealt got dealer %v (random %q)", g.Deal, g.Random)
	}
}

// Census counts every socket listening on the address, another
// process's too, and tells which of baton's listen: one shut down has
// left the group.
func TestCensus(t *testing.T) {
	l, port := reusePortSocket(t, 0)
	a, b := bind(t, l), bind(t, l)
	reusePortSocket(t, port) // another process's
	unix.Shutdown(a, unix.SHUT_RD)
	n, listening, err := Kernel{}.Census([]int{l, a, b})
	if err != nil || n != 3 || !slices.Equal(listening, []bool{true, false, true}) {
		t.Errorf("Census = %d, %v, %v; want 3, [true false true]", n, listening, err)
	}
	if _, _, err := (Kernel{}).Census([]int{-1}); err == nil {
		t.Error("Census of no socket did not fail")
	}
}

// The classic program names sockets by their index in the kernel's
// group, which Group.Socks keeps: a socket bound joins at the end, and
// one that leaves is replaced by the last. Queued counts what waits.
func TestClassicProgramFollowsTheKernelsOrder(t *testing.T) {
	k := Kernel{}
	l, port := reusePortSocket(t, 0)
	a, err := k.Bind(l) // closed by Close below
	if err != nil {
		t.Fatal(err)
	}
	b := bind(t, l)
	c := bind(t, l)
	socks := []int{l, a, b, c}
	if err := k.AttachRandom(l, []int{2}); err != nil {
		t.Fatal(err)
	}
	dial(t, port, socks, 5)
	if got := k.Queued(b); got != 5 {
		t.Fatalf("b, at index 2, holds %d of 5", got)
	}
	k.Close(a) // c moves to index 1
	socks = []int{l, b, c}
	if err := k.AttachRandom(l, []int{1}); err != nil {
		t.Fatal(err)
	}
	dial(t, port, socks, 5)
	if got := k.Queued(c); got != 5 {
		t.Errorf("c, moved to index 1, holds %d of 5", got)
	}
	if n, err := ListenersAt(l); err != nil || n != 3 {
		t.Errorf("%d sockets listen after one was closed (%v), want 3", n, err)
	}
	k.Detach(l)
}

// MigrateOff reads net.ipv4.tcp_migrate_req: 0 resets a closed socket's
// queue; 1, or a file that cannot be read, does not say so.
func TestMigrateOff(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tcp_migrate_req")
	for _, tt := range []struct {
		value string
		want  bool
	}{{"0\n", true}, {"1\n", false}, {"", false}} {
		os.Remove(path)
		if tt.value != "" {
			if err := os.WriteFile(path, []byte(tt.value), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if got := (Kernel{MigrateReq: path}).MigrateOff(); got != tt.want {
			t.Errorf("MigrateOff with %q = %v, want %v", tt.value, got, tt.want)
		}
	}
}
