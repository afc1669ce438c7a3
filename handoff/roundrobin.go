package handoff

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Round-robin (worker.balance = "round-robin", docs/balancing.md): baton
// accepts the connections itself and passes each one's descriptor to the
// next ready worker over a unix stream socket, the worker's channel. The
// wire format is Node.js's IPC channel's, so that a Node worker receives
// them with process.on("message") and no code of ours:
//
//	baton → worker, one sendmsg(2) per connection, its descriptor in SCM_RIGHTS:
//	  {"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":17}}\n
//	worker → baton:
//	  {"cmd":"BATON_ACK","seq":17}\n     taken: baton closes its copy
//	  {"cmd":"BATON_NACK","seq":17}\n    not taken: baton passes it to another worker
//	  {"cmd":"NODE_HANDLE_ACK"}\n        (Node, by itself) the oldest unanswered one is taken
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

// handleMessage is a line baton sends.
type handleMessage struct {
	Cmd string `json:"cmd"`
	Msg struct {
		Cmd      string `json:"cmd"`
		Listener string `json:"listener"`
		Seq      uint64 `json:"seq"`
	} `json:"msg"`
}

// channel is a worker's round-robin channel, shared by its listeners.
type channel struct {
	c   *net.UnixConn
	wmu sync.Mutex // serialises answers

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
	ch := &channel{c: uc, ls: map[string]*rrListener{}, ended: make(chan struct{})}
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
	go ch.read()
	return out, nil
}

// read receives the connections until baton shuts the channel down.
func (ch *channel) read() {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(16*4))
	var line []byte
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		close(ch.ended)
	}()
	for {
		n, oobn, _, _, err := ch.c.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			fds = append(fds, parseRights(oob[:oobn])...)
		}
		data := buf[:n]
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				line = append(line, data...)
				if len(line) > maxMessage {
					line = line[:0] // hostile or broken: drop it
				}
				break
			}
			line = append(line, data[:i]...)
			data = data[i+1:]
			fds = ch.handle(line, fds)
			line = line[:0]
		}
		if err != nil || n == 0 && oobn == 0 {
			return
		}
	}
}

// parseRights returns the descriptors in a control message.
func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

// handle acts on one line; each handle message takes the oldest
// descriptor received. It returns the descriptors left.
func (ch *channel) handle(line []byte, fds []int) []int {
	var m handleMessage
	if json.Unmarshal(line, &m) != nil || m.Cmd != "NODE_HANDLE" {
		return fds
	}
	if len(fds) == 0 {
		return fds // no descriptor came with it: nothing to answer for
	}
	fd := fds[0]
	fds = fds[1:]
	if m.Msg.Cmd != "BATON_CONN" {
		unix.Close(fd)
		return fds
	}
	f := os.NewFile(uintptr(fd), "baton-conn")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		ch.answer("BATON_NACK", m.Msg.Seq)
		return fds
	}
	ch.mu.Lock()
	l := ch.ls[m.Msg.Listener]
	taken := false
	if l != nil && !l.closed {
		select {
		case l.queue <- passed{c, m.Msg.Seq}:
			taken = true
		default:
		}
	}
	ch.mu.Unlock()
	if !taken {
		c.Close() // baton's copy stays open: the client sees nothing
		ch.answer("BATON_NACK", m.Msg.Seq)
	}
	return fds
}

// answer tells baton what became of connection seq.
func (ch *channel) answer(cmd string, seq uint64) {
	msg := `{"cmd":"` + cmd + `","seq":` + strconv.FormatUint(seq, 10) + "}\n"
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	ch.c.Write([]byte(msg)) // baton gone: nothing to tell
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
	l.ch.answer("BATON_ACK", p.seq)
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
