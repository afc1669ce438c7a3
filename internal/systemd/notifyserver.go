package systemd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/unixsock"
)

// MaxNotifySize is the largest datagram NotifyServer accepts; larger ones are
// dropped and counted.
const MaxNotifySize = 4096

// Message is one datagram received on a NotifyServer.
type Message struct {
	// PID and UID are the sender's as the kernel reported them
	// (SCM_CREDENTIALS), not as the sender claims.
	PID, UID int
	// Fields holds the KEY=VALUE lines; a later line wins over an earlier
	// one with the same key.
	Fields map[string]string
}

// NotifyServer receives sd_notify datagrams from worker processes.
type NotifyServer struct {
	conn *net.UnixConn
	path string
	self int // this process's pid, the sender of Sync's markers

	malformed atomic.Int64

	syncConn *net.UnixConn // to the socket itself, for Sync's markers
	syncMu   sync.Mutex
	syncSeq  uint64
	waiting  map[string]chan struct{} // by marker
	closed   chan struct{}
	close    sync.Once

	// buf and oob are Receive's, reused: a reload's datagrams would
	// otherwise each allocate a datagram's worth.
	buf, oob []byte
}

// syncKey is the field of Sync's marker datagrams.
const syncKey = "BATON_SYNC"

// ListenNotify creates a notify socket at path (a filesystem path; an
// existing file there is replaced), mode 0600 from the start, with
// SO_PASSCRED on, so every datagram carries its sender's pid and uid.
func ListenNotify(path string) (*NotifyServer, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("systemd: notify socket: %w", err)
	}
	conn, err := unixsock.ListenPacket(path, func(fd int) error {
		return os.NewSyscallError("setsockopt SO_PASSCRED", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1))
	})
	if err != nil {
		return nil, fmt.Errorf("systemd: notify socket: %w", err)
	}
	// Sync's way in, open from the start so that baton's descriptor count
	// does not change with the first exit it reaps.
	sc, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		conn.Close()
		os.Remove(path)
		return nil, fmt.Errorf("systemd: notify socket: %w", err)
	}
	return &NotifyServer{conn: conn, path: path, self: os.Getpid(), syncConn: sc, waiting: map[string]chan struct{}{}, closed: make(chan struct{})}, nil
}

// Path is the socket's address, the value for a worker's NOTIFY_SOCKET.
func (s *NotifyServer) Path() string { return s.path }

// Malformed counts datagrams dropped because they were oversized, carried
// no credentials, or were not KEY=VALUE text.
func (s *NotifyServer) Malformed() int64 { return s.malformed.Load() }

// Close stops Receive and Sync and removes the socket file.
func (s *NotifyServer) Close() error {
	err := s.conn.Close()
	os.Remove(s.path)
	s.close.Do(func() {
		close(s.closed)
		s.syncConn.Close()
	})
	return err
}

// Sync returns once Receive has returned every datagram that was in the
// socket's queue when Sync was called, and has been called again. A
// caller that learns of something after those datagrams were sent (a
// sender's exit, seen by whoever reaps it) can thus take them first: a
// worker's last message before it exits is not mistaken for one that
// came after. Sync queues a marker datagram of its own behind them and
// waits for Receive to reach it. It returns ctx's error when ctx is done
// first, net.ErrClosed once the server is closed.
func (s *NotifyServer) Sync(ctx context.Context) error {
	s.syncMu.Lock()
	s.syncSeq++
	marker := syncKey + "=" + strconv.FormatUint(s.syncSeq, 10)
	reached := make(chan struct{})
	s.waiting[marker] = reached
	c := s.syncConn
	s.syncMu.Unlock()
	defer func() {
		s.syncMu.Lock()
		delete(s.waiting, marker)
		s.syncMu.Unlock()
	}()

	if d, ok := ctx.Deadline(); ok {
		c.SetWriteDeadline(d)
	}
	if _, err := c.Write([]byte(marker)); err != nil {
		return fmt.Errorf("systemd: notify sync: %w", err)
	}
	select {
	case <-reached:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closed:
		return net.ErrClosed
	}
}

// reached releases the Sync waiting for marker, if any.
func (s *NotifyServer) reached(marker []byte) {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if c, ok := s.waiting[string(marker)]; ok {
		close(c)
		delete(s.waiting, string(marker))
	}
}

// Receive returns the next well-formed message. Malformed datagrams are
// counted and skipped. It returns net.ErrClosed after Close. One goroutine
// at a time may call it.
func (s *NotifyServer) Receive() (Message, error) {
	if s.buf == nil {
		s.buf = make([]byte, MaxNotifySize+1)
		// Room for the credentials and a few descriptors: a sender may
		// attach fds (FDSTORE=1), which must be closed, not leaked.
		s.oob = make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(16*4))
	}
	buf, oob := s.buf, s.oob
	for {
		n, oobn, flags, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return Message{}, err
		}
		pid, uid, ok := parseControl(oob[:oobn])
		if !ok || n > MaxNotifySize || flags&unix.MSG_TRUNC != 0 {
			s.malformed.Add(1)
			continue
		}
		if pid == s.self && bytes.HasPrefix(buf[:n], []byte(syncKey+"=")) {
			s.reached(buf[:n]) // every datagram before it was returned
			continue
		}
		fields, ok := ParseNotify(buf[:n])
		if !ok {
			s.malformed.Add(1)
			continue
		}
		return Message{PID: pid, UID: uid, Fields: fields}, nil
	}
}

// parseControl returns the sender's pid and uid from the credentials and
// closes any descriptor that came along.
func parseControl(oob []byte) (pid, uid int, ok bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, 0, false
	}
	for i := range msgs {
		m := &msgs[i]
		if fds, err := unix.ParseUnixRights(m); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			continue
		}
		if cred, err := unix.ParseUnixCredentials(m); err == nil {
			pid, uid, ok = int(cred.Pid), int(cred.Uid), cred.Pid > 0
		}
	}
	return pid, uid, ok
}

// ParseNotify parses sd_notify text: KEY=VALUE lines separated by newlines.
// An empty line is skipped; any other line without '=' or with an empty
// key makes the whole datagram malformed.
func ParseNotify(b []byte) (map[string]string, bool) {
	fields := map[string]string{}
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		if len(line) == 0 {
			continue
		}
		k, v, found := bytes.Cut(line, []byte{'='})
		if !found || len(k) == 0 || bytes.IndexByte(line, 0) >= 0 {
			return nil, false
		}
		fields[string(k)] = string(v)
	}
	if len(fields) == 0 {
		return nil, false
	}
	return fields, true
}
