package systemd

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// FDStorePrefix starts the name of every socket baton keeps in systemd's
// fd store, so that on the next start it can tell them from the sockets of
// a .socket unit.
const FDStorePrefix = "baton-"

// ErrNoNotifySocket is returned by StoreFD outside systemd.
var ErrNoNotifySocket = errors.New("systemd: NOTIFY_SOCKET is not set")

// StoreFD asks systemd to keep a duplicate of fd in the service's fd store
// (FileDescriptorStoreMax= must be set on the unit) under
// FDStorePrefix+name; systemd passes it back in LISTEN_FDS on the next
// start, even after a crash or `systemctl restart`.
func StoreFD(name string, fd int) error {
	return sendWithFD("FDSTORE=1\nFDNAME="+FDStorePrefix+name, fd)
}

// RemoveStoredFD asks systemd to drop what it keeps under
// FDStorePrefix+name.
func RemoveStoredFD(name string) error {
	return sendWithFD("FDSTOREREMOVE=1\nFDNAME="+FDStorePrefix+name, -1)
}

// sendWithFD sends one notify datagram, with fd attached when fd >= 0. A
// connected socket's WriteMsgUnix refuses an address, so this uses a
// plain unconnected datagram socket and sendmsg.
func sendWithFD(state string, fd int) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return ErrNoNotifySocket
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:] // abstract namespace
	}
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("systemd: notify: %w", os.NewSyscallError("socket", err))
	}
	defer unix.Close(s)
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if err := unix.Sendmsg(s, []byte(state), oob, &unix.SockaddrUnix{Name: path}, 0); err != nil {
		return fmt.Errorf("systemd: notify %q: %w", strings.SplitN(state, "\n", 2)[0], os.NewSyscallError("sendmsg", err))
	}
	return nil
}
