package systemd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseNotify(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string
	}{
		{"READY=1", map[string]string{"READY": "1"}},
		{"READY=1\nSTATUS=serving 3 clients\n", map[string]string{"READY": "1", "STATUS": "serving 3 clients"}},
		{"STATUS=a=b", map[string]string{"STATUS": "a=b"}},
		{"STATUS=one\nSTATUS=two", map[string]string{"STATUS": "two"}},
		{"\n\nWATCHDOG=1\n", map[string]string{"WATCHDOG": "1"}},
		{"STATUS=", map[string]string{"STATUS": ""}},
		{"", nil},
		{"\n", nil},
		{"READY", nil},
		{"=1", nil},
		{"READY=1\ngarbage", nil},
		{"READY=1\x00", nil},
	}
	for _, tt := range tests {
		got, ok := ParseNotify([]byte(tt.in))
		if ok != (tt.want != nil) || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseNotify(%q) = %v, %v; want %v", tt.in, got, ok, tt.want)
		}
	}
}

func listenNotify(t *testing.T) *NotifyServer {
	t.Helper()
	s, err := ListenNotify(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func send(t *testing.T, path string, b []byte, oob []byte) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Sendmsg(fd, b, oob, &unix.SockaddrUnix{Name: path}, 0); err != nil {
		t.Fatal(err)
	}
}

func receive(t *testing.T, s *NotifyServer) Message {
	t.Helper()
	got := make(chan Message, 1)
	go func() {
		m, err := s.Receive()
		if err == nil {
			got <- m
		}
	}()
	select {
	case m := <-got:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message received")
		return Message{}
	}
}

// The kernel's view of the sender's pid is what counts, and bad
// datagrams are counted and skipped without ending Receive.
func TestNotifyServerReceives(t *testing.T) {
	s := listenNotify(t)
	send(t, s.Path(), bytes.Repeat([]byte("x"), MaxNotifySize+1), nil) // oversized
	send(t, s.Path(), []byte("not a notify message"), nil)
	send(t, s.Path(), []byte("READY=1\nSTATUS=up"), nil)
	m := receive(t, s)
	if m.PID != os.Getpid() || m.Fields["READY"] != "1" || m.Fields["STATUS"] != "up" {
		t.Errorf("got %+v, want READY=1 STATUS=up from pid %d", m, os.Getpid())
	}
	if n := s.Malformed(); n != 2 {
		t.Errorf("Malformed() = %d, want 2 (oversized and garbage)", n)
	}
}

// A descriptor sent along (FDSTORE=1 from a confused worker) is closed,
// not leaked into baton.
func TestNotifyServerClosesPassedFDs(t *testing.T) {
	s := listenNotify(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	send(t, s.Path(), []byte("FDSTORE=1"), unix.UnixRights(int(w.Fd())))
	w.Close()
	m := receive(t, s)
	if m.Fields["FDSTORE"] != "1" {
		t.Fatalf("got %+v", m)
	}
	// The only write end left was the one passed: once the server closed
	// it, the read end sees end of file.
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := r.Read(make([]byte, 1)); n != 0 || err == nil || os.IsTimeout(err) {
		t.Errorf("read = %d, %v; want end of file: the passed descriptor was kept open", n, err)
	}
}

// Sync returns only once every datagram queued before it was returned by
// Receive (and Receive was called again), and its markers are never
// returned themselves; it ends at Close.
func TestSync(t *testing.T) {
	s := listenNotify(t)
	const n = 200
	var mu sync.Mutex
	got := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := s.Receive()
			if err != nil {
				return
			}
			if _, ok := m.Fields[syncKey]; ok {
				t.Errorf("Receive returned a Sync marker: %v", m.Fields)
			}
			time.Sleep(100 * time.Microsecond) // a slow reader
			mu.Lock()
			got++
			mu.Unlock()
		}
	}()
	for i := range 3 {
		for range n {
			send(t, s.Path(), []byte("WATCHDOG=1"), nil)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.Sync(ctx)
		cancel()
		mu.Lock()
		g := got
		mu.Unlock()
		if err != nil || g != (i+1)*n {
			t.Fatalf("Sync = %v with %d of %d datagrams received, want nil once all were", err, g, (i+1)*n)
		}
	}
	s.Close()
	<-done
	if err := s.Sync(context.Background()); err == nil {
		t.Error("Sync after Close returned nil")
	}
}
