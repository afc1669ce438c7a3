package drain

import (
	"net"
	"path/filepath"
	"testing"
)

// The default Notify says, beside READY=1 and only there, that the worker
// serves what it accepted (DrainsAcceptedField), in the same datagram.
func TestDefaultNotifyDeclaresDrainsAccepted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	o, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	for state, want := range map[string]string{
		"READY=1":    "READY=1\n" + DrainsAcceptedField,
		"STOPPING=1": "STOPPING=1",
	} {
		if err := o.Notify(state); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(buf)
		if got := string(buf[:n]); err != nil || got != want {
			t.Errorf("Notify(%q) sent %q, %v; want %q", state, got, err, want)
		}
	}
}
