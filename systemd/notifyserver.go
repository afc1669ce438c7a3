package systemd

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
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

	malformed atomic.Int64
}

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
	return &NotifyServer{conn: conn, path: path}, nil
}

// Path is the socket's address, the value for a worker's NOTIFY_SOCKET.
func (s *NotifyServer) Path() string { return s.path }

// Malformed counts datagrams dropped because they were oversized, carried
// no credentials, or were not KEY=VALUE text.
func (s *NotifyServer) Malformed() int64 { return s.malformed.Load() }

// Close stops Receive and removes the socket file.
func (s *NotifyServer) Close() error {
	err := s.conn.Close()
	os.Remove(s.path)
	return err
}

// Receive returns the next well-formed message. Malformed datagrams are
// counted and skipped. It returns net.ErrClosed after Close.
func (s *NotifyServer) Receive() (Message, error) {
	buf := make([]byte, MaxNotifySize+1)
	// Room for the credentials and a few descriptors: a sender may attach
	// fds (FDSTORE=1), which must be closed, not leaked.
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(16*4))
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
