package handoff

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/wire"
)

// Round-robin (worker.balance = "round-robin", docs/balancing.md): baton
// accepts the connections itself and passes each one's descriptor to the
// next ready worker over a unix stream socket, the worker's channel. The
// wire format is Node.js's IPC channel's, so that a Node worker receives
// them with process.on("message") and no code of ours:
//
//	baton → worker, one sendmsg(2) per connection, its descriptor in SCM_RIGHTS:
//	  {"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":17,"peer":"127.0.0.1:50112"}}\n
//	  or, once the worker said BATON_BATCH, up to wire.MaxBatch of them per sendmsg(2)
//	worker → baton:
//	  {"cmd":"BATON_BATCH","max":16}\n                (first) it reads several connections per message
//	  {"cmd":"BATON_ACK","seq":17}\n                 taken: baton closes its copy
//	  {"cmd":"BATON_NACK","seq":17}\n                not taken (out of descriptors): baton passes it on
//	  {"cmd":"BATON_NACK","seq":17,"closed":true}\n  not taken: the listener is closed
//	  {"cmd":"NODE_HANDLE_ACK"}\n                    (Node, by itself) the oldest unanswered one is taken
//
// A batch is the connections baton accepted in one go for this worker:
// one system call on each side for as many as 16 (3.6 on average under
// 64 clients that connect for each request, 2 workers).
//
// peer, the client's address as accept(2) gave it to baton, saves the
// worker a getpeername(2); it is absent where baton has none to give (a
// unix socket). The descriptor comes non-blocking.
//
// Until a connection is answered baton keeps its own copy, so one that a
// worker never took (it stopped, or died) goes to another worker with
// nothing lost. Baton shuts its side of the channel down once it sends
// that worker no more.

// The environment naming the channel: its descriptor, and the stream
// listeners whose connections come over it (':'-separated, as in
// LISTEN_FDNAMES).
const (
	connsEnv          = "BATON_CONNS_FD"
	connsListenersEnv = "BATON_CONNS_LISTENERS"
)

// maxMessage bounds one line on the channel; a longer one is dropped.
const maxMessage = 64 << 10

// connsQueue is how many passed connections a listener holds before
// Accept takes them; baton passes a worker fewer unanswered ones.
const connsQueue = 128

// channel is a worker's round-robin channel, shared by its listeners.
type channel struct {
	c   *net.UnixConn
	wmu sync.Mutex // serialises answers
	msg []byte     // an answer's, under wmu
	out []byte     // what of msg is left to write, under wmu
	// rc is c's, and writeOnce writes out through it once, taking what it
	// wrote off out: made once, as each costs an allocation.
	rc        syscall.RawConn
	writeOnce func(fd uintptr) bool

	mu sync.Mutex
	ls map[string]*rrListener
	// ended is closed once baton has shut its side down (or the channel
	// failed): every connection it passed has been read.
	ended chan struct{}
}

// openChannel takes the channel named by the environment, if any, and
// makes a listener for each name it lists. It unsets the variables.
func openChannel(pidEnv string) (map[string]net.Listener, error) {
	fdEnv, names := os.Getenv(connsEnv), os.Getenv(connsListenersEnv)
	os.Unsetenv(connsEnv)
	os.Unsetenv(connsListenersEnv)
	if os.Getenv("NODE_CHANNEL_FD") == fdEnv {
		// The same descriptor, named for Node.js: a Node child of this
		// process must not take it for its own.
		os.Unsetenv("NODE_CHANNEL_FD")
	}
	if fdEnv == "" {
		return nil, nil
	}
	if pid, err := strconv.Atoi(pidEnv); err != nil || pid != os.Getpid() {
		return nil, nil // the variables were meant for another process
	}
	fd, err := strconv.Atoi(fdEnv)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("handoff: %s=%q: not a descriptor", connsEnv, fdEnv)
	}
	f := os.NewFile(uintptr(fd), "baton-conns")
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("handoff: %s=%d: %w", connsEnv, fd, err)
	}
	uc, ok := fc.(*net.UnixConn)
	if !ok {
		fc.Close()
		return nil, fmt.Errorf("handoff: %s=%d: not a unix socket", connsEnv, fd)
	}
	ch, err := newChannel(uc)
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("handoff: %s=%d: %w", connsEnv, fd, err)
	}
	out := map[string]net.Listener{}
	for name := range strings.SplitSeq(names, ":") {
		if name == "" {
			continue
		}
		if _, dup := ch.ls[name]; dup {
			uc.Close()
			return nil, fmt.Errorf("handoff: %s names %q twice", connsListenersEnv, name)
		}
		l := &rrListener{ch: ch, name: name, queue: make(chan passed, connsQueue), done: make(chan struct{})}
		ch.ls[name], out[name] = l, l
	}
	// Several connections in one message, first thing: baton sends them
	// so once it reads this.
	ch.send(wire.AppendBatch(nil, wire.MaxBatch))
	go ch.read()
	return out, nil
}

// newChannel makes a channel of uc, with no listener yet.
func newChannel(uc *net.UnixConn) (*channel, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	ch := &channel{c: uc, rc: rc, ls: map[string]*rrListener{}, ended: make(chan struct{})}
	ch.writeOnce = func(fd uintptr) bool {
		if n, err := unix.Write(int(fd), ch.out); err == nil {
			ch.out = ch.out[n:]
		}
		return true // once: what is left waits, with a deadline
	}
	return ch, nil
}

// read receives the connections until baton shuts the channel down.
func (ch *channel) read() {
	// Room for whole messages: each read then holds one (wire.BatchBytes).
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(wire.MaxBatch*4))
	r := lineReader{fd: -1}
	defer func() {
		r.close()
		close(ch.ended)
	}()
	var rights []int
	for {
		n, oobn, flags, _, err := ch.c.ReadMsgUnix(buf, oob)
		n, oobn = max(n, 0), max(oobn, 0) // -1 with some errors
		rights = parseRights(oob[:oobn], rights[:0])
		fds := rights
		lost := flags&unix.MSG_CTRUNC != 0
		if lost {
			// Descriptors were lost (this process is out of them): the
			// line they came with goes back to baton.
			closeAll(fds)
			fds = nil
		}
		r.add(buf[:n], fds, lost, ch.handle)
		if err != nil || n == 0 && oobn == 0 {
			return
		}
	}
}

// lineReader splits the channel into lines and gives each connection line
// the descriptor that came with it. Baton sends a message per sendmsg(2):
// one line, or a batch of lines (wire.MaxBatch), with their descriptors in
// the same order; and a read(2) of a unix stream socket ends after the
// message that carries descriptors, and holds all of them. So the
// descriptors of a read belong, in order, to the lines that start in it:
// all of them, when the read holds a whole message (baton's are far
// shorter than a read); the last ones, if lines without a descriptor came
// first; the first ones, if some were lost on the way (the kernel passes
// the first it can and says MSG_CTRUNC).
type lineReader struct {
	line []byte
	fd   int  // the current line's descriptor, -1 if none
	lost bool // its descriptor was lost
	long bool // it is too long to be a message: dropped
}

// add takes one read's data and descriptors (lost: some were lost on the
// way); each line ends in handle.
func (r *lineReader) add(data []byte, fds []int, lost bool, handle func(line []byte, fd int, lost bool)) {
	// The lines that start in data: after each end of line but one at
	// its very end, and at its start if it continues no line.
	starts := bytes.Count(data[:max(len(data)-1, 0)], []byte{'\n'})
	if len(data) > 0 && len(r.line) == 0 && !r.long {
		starts++
	}
	skip := 0 // the starting lines before the first with a descriptor
	if !lost && len(fds) < starts {
		skip = starts - len(fds)
	}
	started := 0
	for start := 0; start < len(data); {
		end := len(data)
		if i := bytes.IndexByte(data[start:], '\n'); i >= 0 {
			end = start + i + 1
		}
		if start > 0 || len(r.line) == 0 && !r.long {
			// A line starts here.
			if started >= skip {
				r.lost = r.lost || lost
				if len(fds) > 0 {
					r.setFd(fds[0])
					fds = fds[1:]
				}
			}
			started++
		}
		body, ended := bytes.CutSuffix(data[start:end], []byte{'\n'})
		start = end
		if !r.long {
			r.line = append(r.line, body...)
			if len(r.line) > maxMessage {
				r.line, r.long = r.line[:0], true // hostile or broken: dropped
			}
		}
		if ended {
			if !r.long {
				handle(r.line, r.fd, r.lost)
				r.fd = -1 // handle took it
			}
			r.close()
			r.line, r.long, r.lost = r.line[:0], false, false
		}
	}
	closeAll(fds) // more than lines: none of ours
}

func (r *lineReader) setFd(fd int) {
	r.close()
	r.fd = fd
}

// close closes the current line's descriptor, if any.
func (r *lineReader) close() {
	if r.fd >= 0 {
		unix.Close(r.fd)
	}
	r.fd = -1
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// parseRights appends the descriptors in a control message to fds. The
// kernel builds it, so it is well formed; one that is not yields none
// (whatever descriptors it carried stay open: nothing can tell which they
// are).
func parseRights(oob []byte, fds []int) []int {
	n := len(fds)
	for len(oob) >= unix.CmsgLen(0) {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return fds[:n]
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS {
			for ; len(data) >= 4; data = data[4:] {
				fds = append(fds, int(int32(binary.NativeEndian.Uint32(data))))
			}
		}
		oob = rest
	}
	return fds
}

// handle acts on one line and the descriptor that came with it (fd, -1
// if none; lost: it was lost on the way).
func (ch *channel) handle(line []byte, fd int, lost bool) {
	conn, ok := wire.ParseConn(line)
	seq := conn.Seq
	if !ok {
		if fd >= 0 {
			unix.Close(fd)
		}
		return
	}
	if fd < 0 {
		// Lost, or never sent: baton still has it and passes it on.
		ch.answer("BATON_NACK", seq, false)
		return
	}
	c, err := newPassedConn(fd, conn.Peer)
	if err != nil {
		ch.answer("BATON_NACK", seq, false)
		return
	}
	ch.mu.Lock()
	l := ch.ls[string(conn.Listener)]
	taken, closed := false, l == nil || l.closed
	if !closed {
		select {
		case l.queue <- passed{c, seq}:
			taken = true
		default:
		}
	}
	ch.mu.Unlock()
	if !taken {
		c.Close() // baton's copy stays open: the client sees nothing
		ch.answer("BATON_NACK", seq, closed)
	}
}

// answerTimeout bounds an answer's write: a baton that stopped reading
// must not hang Accept.
const answerTimeout = time.Second

// answer tells baton what became of connection seq; closed, with a NACK:
// the listener is closed, send no more of its connections. The channel's
// buffer has room for thousands of answers, so the write is tried first
// without a deadline, which costs a timer's update per connection; only
// what does not fit waits, for answerTimeout at most.
func (ch *channel) answer(cmd string, seq uint64, closed bool) {
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	ch.msg = wire.AppendAnswer(ch.msg[:0], cmd, seq, closed)
	ch.write()
}

// send writes line to baton as answers are written.
func (ch *channel) send(line []byte) {
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	ch.msg = append(ch.msg[:0], line...)
	ch.write()
}

// write writes msg. Under wmu.
func (ch *channel) write() {
	ch.out = ch.msg
	ch.rc.Write(ch.writeOnce)
	if len(ch.out) > 0 {
		ch.c.SetWriteDeadline(time.Now().Add(answerTimeout))
		ch.c.Write(ch.out) // baton gone: nothing to tell
		// None for the next: a deadline past would fail its first try.
		ch.c.SetWriteDeadline(time.Time{})
	}
}

type passed struct {
	c   net.Conn
	seq uint64
}

// rrListener is a net.Listener whose connections baton passes over the
// channel.
type rrListener struct {
	ch    *channel
	name  string
	queue chan passed
	done  chan struct{}
	// closing: Close was called; closed: it returned, and connections
	// passed from now on go back. Under ch.mu.
	closing, closed bool
}

// Accept returns the next connection baton passed, telling baton it is
// taken. After Close it returns those passed before baton shut the
// channel down, then an error.
func (l *rrListener) Accept() (net.Conn, error) {
	select {
	case p := <-l.queue:
		return l.take(p), nil
	default:
	}
	select {
	case p := <-l.queue:
		return l.take(p), nil
	case <-l.done:
		select {
		case p := <-l.queue:
			return l.take(p), nil
		default:
		}
		return nil, &net.OpError{Op: "accept", Net: "round-robin", Addr: l.Addr(), Err: net.ErrClosed}
	}
}

func (l *rrListener) take(p passed) net.Conn {
	l.ch.answer("BATON_ACK", p.seq, false)
	return p.c
}

// closeWait bounds how long Close waits for baton to shut the channel
// down.
const closeWait = time.Second

// Close stops taking connections. Baton stops passing them to a worker it
// tells to stop before it signals it, and shuts the channel down: Close
// waits for that end (a second at most), so that what baton passed before
// is still accepted. Connections passed later go back to baton for
// another worker.
func (l *rrListener) Close() error {
	l.ch.mu.Lock()
	if l.closing {
		l.ch.mu.Unlock()
		return nil
	}
	l.closing = true
	l.ch.mu.Unlock()
	t := time.NewTimer(closeWait)
	select {
	case <-l.ch.ended:
	case <-t.C:
	}
	t.Stop()
	l.ch.mu.Lock()
	l.closed = true
	close(l.done)
	l.ch.mu.Unlock()
	return nil
}

// Addr names the listener: its connections' own addresses say where
// clients connected.
func (l *rrListener) Addr() net.Addr { return rrAddr(l.name) }

type rrAddr string

func (a rrAddr) Network() string { return "round-robin" }
func (a rrAddr) String() string  { return string(a) }
