package handoff

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/roundrobin"
)

// rrWorker is one worker's side of a round-robin channel, in this process.
type rrWorker struct {
	pid int
	l   net.Listener
	all map[string]net.Listener
}

// rrSetup starts a Balancer on a loopback listener "http" and n workers'
// channels, each opened by openChannel as a worker would.
func rrSetup(t *testing.T, n int) (*roundrobin.Balancer, string, []*rrWorker) {
	t.Helper()
	b, addrs, ws := rrSetupNamed(t, n, "http")
	return b, addrs[0], ws
}

// rrSetupNamed is rrSetup with a listener for each name (keys 1, 2, ...);
// each worker's l is its first.
func rrSetupNamed(t *testing.T, n int, names ...string) (*roundrobin.Balancer, []string, []*rrWorker) {
	t.Helper()
	b := roundrobin.New(nil, nil)
	keys := map[int]string{}
	var addrs []string
	for i, name := range names {
		keys[i+1] = name
		addrs = append(addrs, rrListen(t, b, i+1, name))
	}
	var ws []*rrWorker
	for i := range n {
		c, err := b.Channel(keys, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(connsEnv, strconv.Itoa(c.WorkerFd))
		t.Setenv(connsListenersEnv, strings.Join(names, ":"))
		ls, err := openChannel(strconv.Itoa(os.Getpid()))
		if err != nil {
			t.Fatal(err)
		}
		w := &rrWorker{pid: 1000 + i, l: ls[names[0]], all: ls}
		t.Cleanup(func() {
			for _, l := range w.all {
				l.Close()
			}
		})
		b.Attach(w.pid, c)
		ws = append(ws, w)
	}
	// First, so the workers' Close sees the channel end at once.
	t.Cleanup(b.Close)
	return b, addrs, ws
}

// rrListen makes b accept on a new loopback listener, under key, for the
// workers that know it as name, and returns its address.
func rrListen(t *testing.T, b *roundrobin.Balancer, key int, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return rrListenOn(t, b, key, name, ln)
}

// rrListenOn is rrListen on the listener ln.
func rrListenOn(t *testing.T, b *roundrobin.Balancer, key int, name string, ln net.Listener) string {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := b.Listen(key, int(f.Fd()), name); err != nil {
		t.Fatal(err)
	}
	return ln.Addr().String()
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

// askWaiting is ask for a client that may wait on a worker for a while:
// it returns the answer, or what went wrong.
func askWaiting(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "who\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err.Error()
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
	// A counter: what a listener passed stays counted once it is gone.
	b.Unlisten(1)
	if n := b.Passed()["http"]; n != 10 {
		t.Errorf("passed %d after Unlisten, want 10", n)
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
		go func() { answers <- askWaiting(addr) }()
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
	b := roundrobin.New(nil, nil)
	defer b.Close()
	c, err := b.Channel(map[int]string{1: "http"}, 0)
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

// A listener the worker never accepts on holds at most its own window of
// connections: the worker's other listener keeps getting its own.
func TestRoundRobinWindowPerListener(t *testing.T) {
	b, addrs, ws := rrSetupNamed(t, 1, "http", "admin")
	go ws[0].serve() // http only
	b.Route(pids(ws))
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range roundrobin.Window + 6 {
		c, err := net.DialTimeout("tcp", addrs[1], 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	waitFor(t, func() bool { return b.Passed()["admin"] >= roundrobin.Window })
	if got := ask(t, addrs[0]); got != "1000" {
		t.Errorf("http answered by %q", got)
	}
}

// Close and Unlisten return while connections keep coming and being
// answered (the accept callback wants the lock Close held, and Close
// waits for the callback).
func TestRoundRobinCloseUnderTraffic(t *testing.T) {
	for range 5 {
		b, addr, ws := rrSetup(t, 2)
		for _, w := range ws {
			go w.serve()
		}
		b.Route(pids(ws))
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					c, err := net.DialTimeout("tcp", addr, time.Second)
					if err != nil {
						continue
					}
					c.SetDeadline(time.Now().Add(time.Second))
					io.WriteString(c, "who\n")
					bufio.NewReader(c).ReadString('\n')
					c.Close()
				}
			})
		}
		waitFor(t, func() bool { return b.Passed()["http"] > 50 })
		done := make(chan struct{})
		go func() {
			b.Unlisten(1)
			b.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Unlisten and Close did not return under traffic")
		}
		close(stop)
		wg.Wait()
	}
}

// Each line gets the descriptor that came in the read where it starts
// last; a connection line without one is answered, for baton to pass it
// on.
func TestLineReader(t *testing.T) {
	type got struct {
		line string
		fd   int
		lost bool
	}
	var lines []got
	handle := func(line []byte, fd int, lost bool) {
		lines = append(lines, got{string(line), fd, lost})
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	pipe := func() int {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		unix.Close(p[1])
		return p[0]
	}
	r := lineReader{fd: -1}
	a, b2 := pipe(), pipe()
	r.add([]byte("one\ntwo\nthr"), []int{a}, false, handle) // a: "thr..." starts last
	r.add([]byte("ee\n"), nil, false, handle)
	r.add([]byte("four\n"), []int{b2}, false, handle)
	r.add([]byte("five\n"), nil, true, handle)
	want := []got{{"one", -1, false}, {"two", -1, false}, {"three", a, false}, {"four", b2, false}, {"five", -1, true}}
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("lines %v, want %v", lines, want)
	}

	// Batches: a message's descriptors go to its lines in order; lost
	// ones are the last (the kernel passes the first it can); one more
	// than lines is closed.
	lines = nil
	c, d, e, f, g, extra := pipe(), pipe(), pipe(), pipe(), pipe(), pipe()
	r.add([]byte("six\nseven\neight\n"), []int{c, d, e}, false, handle)
	r.add([]byte("nine\nten\neleven\n"), []int{f}, true, handle)
	r.add([]byte("twelve\n"), []int{g, extra}, false, handle)
	want = []got{{"six", -1, false}, {"seven", -1, false}, {"eight", -1, false},
		{"nine", -1, true}, {"ten", -1, true}, {"eleven", -1, true}, {"twelve", -1, false}}
	want[0].fd, want[1].fd, want[2].fd, want[3].fd, want[6].fd = c, d, e, f, g
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("batches: lines %v, want %v", lines, want)
	}
	if _, err := unix.FcntlInt(uintptr(extra), unix.F_GETFD, 0); err == nil {
		t.Errorf("a descriptor beyond the lines was left open")
		unix.Close(extra)
	}
}

// testChannel returns a worker's channel, with no listener, and baton's
// end of it (blocking).
func testChannel(t *testing.T) (*channel, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	f := os.NewFile(uintptr(fds[0]), "test")
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fc.Close() })
	ch, err := newChannel(fc.(*net.UnixConn))
	if err != nil {
		t.Fatal(err)
	}
	return ch, fds[1]
}

// An answer to a baton that stopped reading gives up (answerTimeout),
// and the next answers go whole once baton reads again.
func TestAnswerToBatonNotReading(t *testing.T) {
	ch, baton := testChannel(t)
	unix.SetNonblock(baton, true)
	// Baton's side fills up.
	ch.rc.Control(func(fd uintptr) {
		for {
			if _, err := unix.Write(int(fd), []byte("x")); err != nil {
				break
			}
		}
	})
	done := make(chan struct{})
	go func() {
		ch.answer("BATON_ACK", 6, false)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * answerTimeout):
		t.Fatal("an answer to a baton that stopped reading still waits")
	}
	buf := make([]byte, 4096)
	for {
		if _, err := unix.Read(baton, buf); err != nil {
			break
		}
	}
	ch.answer("BATON_ACK", 7, false)
	unix.SetNonblock(baton, false)
	n, err := unix.Read(baton, buf)
	if got, want := string(buf[:max(n, 0)]), `{"cmd":"BATON_ACK","seq":7}`+"\n"; err != nil || got != want {
		t.Errorf("after baton read again: %q, %v, want %q", got, err, want)
	}
}

// A connection line whose descriptor was lost is answered BATON_NACK, one
// for a closed listener BATON_NACK with closed.
func TestHandleAnswersWhatItCannotTake(t *testing.T) {
	ch, baton := testChannel(t)
	ch.ls["http"] = &rrListener{ch: ch, name: "http", queue: make(chan passed, 1), done: make(chan struct{}), closed: true}
	ch.handle([]byte(`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":5}}`), -1, true)
	// Any socket will do as the passed descriptor.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	dup, err := unix.Dup(int(lf.Fd()))
	lf.Close()
	if err != nil {
		t.Fatal(err)
	}
	ch.handle([]byte(`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":6}}`), dup, false)
	buf := make([]byte, 256)
	var all string
	for !strings.Contains(all, `"seq":6`) {
		n, err := unix.Read(baton, buf)
		if err != nil || n == 0 {
			t.Fatalf("read answers: %v (have %q)", err, all)
		}
		all += string(buf[:n])
	}
	want := `{"cmd":"BATON_NACK","seq":5}` + "\n" + `{"cmd":"BATON_NACK","seq":6,"closed":true}` + "\n"
	if all != want {
		t.Errorf("answers %q, want %q", all, want)
	}
}

// rrBound is the bound of the stuck-worker tests: short, as a test wants
// it, and far above how long a worker that reads takes to.
const rrBound = 200 * time.Millisecond

// rrStuckSetup starts a Balancer on a loopback listener "http" with a
// worker for each of open: those it says open take their channel as a
// worker would (l), the others leave it to the test (end, -1 otherwise).
// Each worker found stuck is sent on the channel returned.
func rrStuckSetup(t *testing.T, open ...bool) (*roundrobin.Balancer, string, []*rrWorker, []int, chan roundrobin.Stuck) {
	t.Helper()
	stuck := make(chan roundrobin.Stuck, len(open))
	b := roundrobin.New(nil, func(s roundrobin.Stuck) { stuck <- s })
	addr := rrListen(t, b, 1, "http")
	var ws []*rrWorker
	var ends []int
	for i, o := range open {
		c, err := b.Channel(map[int]string{1: "http"}, rrBound)
		if err != nil {
			t.Fatal(err)
		}
		w := &rrWorker{pid: 1000 + i}
		end := -1
		if o {
			t.Setenv(connsEnv, strconv.Itoa(c.WorkerFd))
			t.Setenv(connsListenersEnv, "http")
			ls, err := openChannel(strconv.Itoa(os.Getpid()))
			if err != nil {
				t.Fatal(err)
			}
			w.l, w.all = ls["http"], ls
			t.Cleanup(func() { w.l.Close() })
		} else {
			end = c.WorkerFd
			t.Cleanup(func() { unix.Close(end) })
		}
		b.Attach(w.pid, c)
		ws, ends = append(ws, w), append(ends, end)
	}
	t.Cleanup(b.Close)
	b.Route(pids(ws))
	return b, addr, ws, ends, stuck
}

// waitStuck waits for the next worker found stuck.
func waitStuck(t *testing.T, stuck chan roundrobin.Stuck) roundrobin.Stuck {
	t.Helper()
	select {
	case s := <-stuck:
		if s.Unread < rrBound {
			t.Errorf("worker %d reported stuck after %s unread, before its bound %s", s.PID, s.Unread, rrBound)
		}
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no worker found stuck in 10s")
		return roundrobin.Stuck{}
	}
}

// A worker that never reads its channel is found stuck once its bound
// has passed, and the connections it was passed go to the worker that
// takes them: every client gets its answer.
func TestRoundRobinStuckWorkerGivesBack(t *testing.T) {
	b, addr, ws, _, stuck := rrStuckSetup(t, false, true)
	go ws[1].serve()
	answers := make(chan string, 4)
	for range 4 {
		go func() { answers <- askWaiting(addr) }()
	}
	s := waitStuck(t, stuck)
	if s.PID != 1000 || s.TakenBack < 1 {
		t.Errorf("stuck %+v, want worker 1000 with connections taken back", s)
	}
	for range 4 {
		if got := <-answers; got != "1001" {
			t.Errorf("answer %q, want 1001", got)
		}
	}
	if n := b.Reclaimed()["http"]; n != uint64(s.TakenBack) {
		t.Errorf("reclaimed %d, want %d", n, s.TakenBack)
	}
	if n := b.Passed()["http"]; n != 4 {
		t.Errorf("passed %d, want 4 (each connection counted once)", n)
	}
}

// A stuck worker keeps the connection it read (it has its descriptor):
// only the one it never began to read goes to another worker, so no
// connection is ever served twice.
func TestRoundRobinStuckWorkerKeepsWhatItRead(t *testing.T) {
	b, addr, ws, ends, stuck := rrStuckSetup(t, false, true)
	go ws[1].serve()
	type result struct {
		i      int
		answer string
	}
	answers := make(chan result, 3)
	dial := func(i int) {
		go func() { answers <- result{i, askWaiting(addr)} }()
		waitFor(t, func() bool { return b.Passed()["http"] == uint64(i+1) })
	}
	// In turn: the first to 1000, which reads it (here, by hand) and
	// answers it itself, the second to 1001, the third to 1000, which
	// reads no more.
	dial(0)
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(ends[0], buf, oob, 0)
	if err != nil {
		t.Fatal(err)
	}
	fds := parseRights(oob[:oobn], nil)
	if len(fds) != 1 || !strings.Contains(string(buf[:n]), `"seq":`) {
		t.Fatalf("read %q with %d descriptors, want a connection line with one", buf[:n], len(fds))
	}
	c := os.NewFile(uintptr(fds[0]), "conn")
	go func() {
		defer c.Close()
		bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "mine\n")
	}()
	dial(1)
	dial(2)
	s := waitStuck(t, stuck)
	if s.PID != 1000 || s.TakenBack != 1 {
		t.Errorf("stuck %+v, want worker 1000 with 1 connection taken back", s)
	}
	want := []string{"mine", "1001", "1001"}
	for range 3 {
		r := <-answers
		if r.answer != want[r.i] {
			t.Errorf("connection %d answered %q, want %q", r.i, r.answer, want[r.i])
		}
	}
	// Its channel has nothing left, and ends: it gets nothing more.
	if n, err := unix.Read(ends[0], buf); n != 0 || err != nil {
		t.Errorf("stuck worker's channel: read %q, %v; want its end", buf[:max(n, 0)], err)
	}
}

// A worker that reads its channel but does not accept (busy) is not
// stuck, however long its connections wait for an answer: it has their
// descriptors. A stuck worker beside it, passed a connection later, is
// found: so the busy one has been looked at past its bound.
func TestRoundRobinBusyWorkerIsNotStuck(t *testing.T) {
	b, addr, _, _, stuck := rrStuckSetup(t, true, false)
	for i := range 2 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		waitFor(t, func() bool { return b.Passed()["http"] == uint64(i+1) })
	}
	if s := waitStuck(t, stuck); s.PID != 1001 {
		t.Errorf("stuck %+v, want worker 1001", s)
	}
	b.Close() // the checks are over
	close(stuck)
	for s := range stuck {
		t.Errorf("also stuck: %+v", s)
	}
}
