package systemd

import (
	"strings"
	"testing"
)

// A STATUS= of any length is cut, so that the READY=1 sent with it
// reaches the manager: a datagram past the socket's send buffer (about
// 208 KiB) would fail whole with "message too long".
func TestNotifyCutsLongStatus(t *testing.T) {
	sock := fakeManager(t)
	for _, n := range []int{10, MaxStatus, 300 << 10, 10 << 20} {
		status := strings.Repeat("s", n)
		if err := Notify("READY=1\nSTATUS=" + status + "\nX=1"); err != nil {
			t.Fatalf("Notify with a %d-byte status: %v", n, err)
		}
		msg, _ := receiveFDs(t, sock)
		lines := strings.Split(msg, "\n")
		if len(lines) != 3 || lines[0] != "READY=1" || lines[2] != "X=1" || !strings.HasPrefix(lines[1], "STATUS=sss") {
			t.Fatalf("a %d-byte status: the manager got %.200q", n, msg)
		}
		got := strings.TrimPrefix(lines[1], "STATUS=")
		if n <= MaxStatus && got != status || n > MaxStatus && (len(got) > MaxStatus+32 || !strings.HasSuffix(got, " bytes)")) {
			t.Errorf("a %d-byte status arrived as %d bytes: %.80q...", n, len(got), got)
		}
	}
}
