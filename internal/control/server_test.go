package control

import (
	"bufio"
	"encoding/json"
	"fmt"
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

// logs --slot and --stream: the last n lines of that slot or stream,
// however many others came after them, then only its new ones.
func TestLogsFilter(t *testing.T) {
	slot := func(n int) *int { return &n }
	for _, c := range []struct {
		name   string
		req    Request
		lines  int
		want   string // slot/stream:text, the old lines then the followed ones
		follow bool
	}{
		{"no filter", Request{}, 3, "0/stderr:8 1/stdout:9 0/stdout:10 | 0/stderr:n1 1/stdout:n2", true},
		{"slot", Request{Slot: slot(0)}, 2, "0/stderr:8 0/stdout:10 | 0/stderr:n1", true},
		{"stream", Request{Stream: "stderr"}, 2, "1/stderr:5 0/stderr:8 | 0/stderr:n1", true},
		{"both", Request{Slot: slot(1), Stream: "stderr"}, 5, "1/stderr:5 |", true},
		{"none match", Request{Slot: slot(7)}, 5, "", false},
		{"not following", Request{Slot: slot(1), Stream: "stdout"}, 1, "1/stdout:9", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ring := linering.New(linering.Options{})
			// Slot 0 then 1 in turn; streams stdout, stdout, stderr.
			for i := 1; i <= 10; i++ {
				ring.Add(linering.Line{Slot: i % 2, Stream: [...]string{"stdout", "stdout", "stderr"}[i%3], Text: strconv.Itoa(i)})
			}
			req := c.req
			req.Command, req.Lines, req.Follow = "logs", &c.lines, c.follow
			server, client := net.Pipe()
			quit := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				defer server.Close()
				(&Server{Ring: ring}).streamLogs(server, req, quit)
			}()
			defer func() { client.Close(); close(quit); <-done }()
			client.SetDeadline(time.Now().Add(time.Minute))
			sc := bufio.NewScanner(client)
			var got []string
			read := func(n int) {
				for range n {
					if !sc.Scan() {
						t.Fatalf("after %q: %v", got, sc.Err())
					}
					var r Response
					if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Log == nil {
						t.Fatalf("%q: %v", sc.Text(), err)
					}
					got = append(got, fmt.Sprintf("%d/%s:%s", r.Log.Slot, r.Log.Stream, r.Log.Line))
				}
			}
			old, followed, _ := strings.Cut(c.want, "|")
			read(len(strings.Fields(old)))
			if c.follow {
				got = append(got, "|")
				ring.Add(linering.Line{Slot: 0, Stream: "stderr", Text: "n1"})
				ring.Add(linering.Line{Slot: 1, Stream: "stdout", Text: "n2"})
				// A line the filter takes ends the test: nothing may come
				// before it that should not.
				end := linering.Line{Slot: 1, Stream: "stderr", Text: "end"}
				if req.Slot != nil {
					end.Slot = *req.Slot
				}
				ring.Add(end)
				read(len(strings.Fields(followed)) + 1)
				if last, want := got[len(got)-1], fmt.Sprintf("%d/stderr:end", end.Slot); last != want {
					t.Errorf("followed up to %q, want %s", last, want)
				}
				got = got[:len(got)-1]
			} else if sc.Scan() {
				t.Errorf("more than asked for: %q", sc.Text())
			}
			if g := strings.Join(got, " "); g != strings.TrimSpace(c.want) {
				t.Errorf("got %q, want %q", g, c.want)
			}
		})
	}
}
