package drain

import "golang.org/x/sys/unix"

// receiveQueue returns the number of unread bytes in the receive queue of
// socket fd, 0 if it cannot tell.
func receiveQueue(fd uintptr) int {
	n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	if err != nil {
		return 0
	}
	return n
}
