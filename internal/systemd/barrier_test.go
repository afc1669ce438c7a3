package systemd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeManager is a notify socket that hands each datagram's passed
// descriptors to the test.
func fakeManager(t *testing.T) (fd int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	return fd
}

// receiveFDs reads one datagram and returns its text and passed descriptors.
func receiveFDs(t *testing.T, sock int) (string, []int) {
	t.Helper()
	buf, oob := make([]byte, 64<<10), make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, got...)
	}
	return string(buf[:n]), fds
}

func TestBarrierWaitsForTheManager(t *testing.T) {
	sock := fakeManager(t)
	done := make(chan error, 1)
	go func() { done <- Barrier(context.Background()) }()
	msg, fds := receiveFDs(t, sock)
	if msg != "BARRIER=1" || len(fds) != 1 {
		t.Fatalf("got %q with %d fds, want BARRIER=1 with one", msg, len(fds))
	}
	select {
	case err := <-done:
		t.Fatalf("Barrier returned %v before the manager closed the pipe", err)
	case <-time.After(100 * time.Millisecond):
	}
	unix.Close(fds[0])
	if err := <-done; err != nil {
		t.Fatalf("Barrier: %v", err)
	}
}

func TestBarrierTimesOut(t *testing.T) {
	sock := fakeManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Barrier(ctx) }()
	_, fds := receiveFDs(t, sock)
	defer unix.Close(fds[0]) // a manager that never answers
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Barrier = %v, want the deadline", err)
	}
}

func TestBarrierOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Barrier(context.Background()); err != nil {
		t.Fatalf("Barrier without NOTIFY_SOCKET = %v, want nil", err)
	}
}

func TestWatchdogFor(t *testing.T) {
	self, parent := os.Getpid(), os.Getppid()
	tests := []struct {
		usec, pid string
		parent    int
		want      time.Duration
		bad       bool
	}{
		{"", "", 0, 0, false},
		{"2000000", "", 0, 2 * time.Second, false},
		{"2000000", strconv.Itoa(self), 0, 2 * time.Second, false},
		{"2000000", strconv.Itoa(parent), 0, 0, false},                    // someone else's
		{"2000000", strconv.Itoa(parent), parent, 2 * time.Second, false}, // inherited from the supervisor it took over from
		{"0", "", 0, 0, true},
		{"abc", "", 0, 0, true},
		{"2000000", "x", 0, 0, true},
	}
	for _, tt := range tests {
		t.Setenv("WATCHDOG_USEC", tt.usec)
		t.Setenv("WATCHDOG_PID", tt.pid)
		got, err := WatchdogFor(tt.parent)
		if got != tt.want || (err != nil) != tt.bad {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q parent %d: got %v, %v; want %v, error %v", tt.usec, tt.pid, tt.parent, got, err, tt.want, tt.bad)
		}
	}
}
