package control

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/linering"
)

// A logs client that does not read loses its connection within the write
// timeout, however long the answer: it cannot keep a control slot.
func TestLogsClientThatDoesNotReadIsCutOff(t *testing.T) {
	ring := linering.New(linering.Options{})
	for i := range 400 {
		ring.Add(linering.Line{Slot: 0, PID: 1, Stream: "stdout", Text: strings.Repeat("x", 4000) + strconv.Itoa(i)})
	}
	server, client := net.Pipe()
	defer client.Close()
	done := make(chan struct{})
	lines := MaxLogLines
	go func() {
		defer close(done)
		(&Server{Ring: ring}).streamLogs(server, Request{Command: "logs", Lines: &lines}, make(chan struct{}))
	}()
	select {
	case <-done:
	case <-time.After(10 * writeTimeout):
		t.Fatal("streamLogs still writing to a client that reads nothing")
	}
}
