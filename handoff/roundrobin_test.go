package handoff

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/roundrobin"
)

// rrWorker is one worker's side of a round-robin channel, in this process.
type rrWorker struct {
	pid int
	l   net.Listener
}

// rrSetup starts a Balancer on a loopback listener and n workers'
// channels, each opened by openChannel as a worker would.
func rrSetup(t *testing.T, n int) (*roundrobin.Balancer, string, []*rrWorker) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := roundrobin.New(nil)
	if err := b.Listen(1, int(f.Fd()), "http"); err != nil {
		t.Fatal(err)
	}
	var ws []*rrWorker
	for i := range n {
		c, err := b.Channel(map[int]string{1: "http"})
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(connsEnv, strconv.Itoa(c.WorkerFd))
		t.Setenv(connsListenersEnv, "http")
		ls, err := openChannel(strconv.Itoa(os.Getpid()))
		if err != nil {
			t.Fatal(err)
		}
		w := &rrWorker{pid: 1000 + i, l: ls["http"]}
		t.Cleanup(func() { w.l.Close() })
		b.Attach(w.pid, c)
		ws = append(ws, w)
	}
	// First, so the workers' Close sees the channel end at once.
	t.Cleanup(b.Close)
	return b, ln.Addr().String(), ws
}

// serveNames answers every connection of w with its pid, until closed.
func (w *rrWorker) serve() {
	for {
		c, err := w.l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				if _, err := br.ReadString('\n'); err != nil {
					return
				}
				fmt.Fprintf(c, "%d\n", w.pid)
			}
		}()
	}
}

// ask sends one line on a new connection and returns the answer.
func ask(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "who\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return line[:len(line)-1]
}

func pids(ws []*rrWorker) []int {
	var out []int
	for _, w := range ws {
		out = append(out, w.pid)
	}
	return out
}

// Connections go to the ready workers in turn.
func TestRoundRobinTakesTurns(t *testing.T) {
	b, addr, ws := rrSetup(t, 3)
	for _, w := range ws {
		go w.serve()
	}
	b.Route(pids(ws))
	var got []string
	for range 6 {
		got = append(got, ask(t, addr))
	}
	want := []string{"1000", "1001", "1002", "1000", "1001", "1002"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("answers %v, want %v", got, want)
	}
	if n := b.Passed()["http"]; n != 6 {
		t.Errorf("passed %d, want 6", n)
	}
	// A worker detached (told to stop) gets nothing more.
	b.Detach(1001)
	got = nil
	for range 4 {
		got = append(got, ask(t, addr))
	}
	for _, g := range got {
		if g == "1001" {
			t.Errorf("a detached worker answered: %v", got)
		}
	}
}

// A connection passed to a worker that closes its listener before
// accepting it goes to another worker: the client notices nothing.
func TestRoundRobinClosedWorkerGivesBack(t *testing.T) {
	b, addr, ws := rrSetup(t, 2)
	ws[0].l.Close() // it will not accept: what it is passed comes back
	go ws[1].serve()
	b.Route(pids(ws))
	for i := range 4 {
		if got := ask(t, addr); got != "1001" {
			t.Fatalf("connection %d answered by %s, want 1001", i, got)
		}
	}
}

// A worker that exits without taking what it was passed: those
// connections go to another.
func TestRoundRobinExitedWorkerGivesBack(t *testing.T) {
	b, addr, ws := rrSetup(t, 2)
	b.Route(pids(ws)[:1]) // only 1000, which never accepts
	answers := make(chan string, 2)
	for range 2 {
		go func() {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				answers <- err.Error()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "who\n")
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				answers <- err.Error()
				return
			}
			answers <- line[:len(line)-1]
		}()
	}
	// Both wait at 1000, unanswered, until it is gone.
	waitFor(t, func() bool { return b.Passed()["http"] == 2 })
	go ws[1].serve()
	b.Route(pids(ws)[1:])
	b.Exited(1000)
	for range 2 {
		if got := <-answers; got != "1001" {
			t.Errorf("answer %q, want 1001", got)
		}
	}
}

// A line that is no answer, or far too long, is skipped; the channel
// keeps working.
func TestRoundRobinIgnoresGarbage(t *testing.T) {
	b := roundrobin.New(nil)
	defer b.Close()
	c, err := b.Channel(map[int]string{1: "http"})
	if err != nil {
		t.Fatal(err)
	}
	b.Attach(7, c)
	junk := []string{"not json\n", `{"cmd":"BATON_ACK","seq":99}` + "\n", `{"cmd":"NODE_HANDLE_ACK"}` + "\n", string(make([]byte, 100<<10)) + "\n"}
	for _, j := range junk {
		if _, err := unix.Write(c.WorkerFd, []byte(j)); err != nil {
			t.Fatal(err)
		}
	}
	unix.Close(c.WorkerFd)
	b.Exited(7)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
