package wire

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strconv"
	"time"
)

// ConnStart returns what comes before the sequence number in the line of
// a connection of the listener name; AppendConn completes it.
func ConnStart(name string) []byte {
	quoted, _ := json.Marshal(name) // a string always encodes
	return append(append([]byte(connPrefix), quoted...), `,"seq":`...)
}

// connPrefix is how a connection's line begins, up to its listener's
// name.
const connPrefix = `{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":`

// AppendConn appends the line (with its end) of connection seq, whose
// start is ConnStart's; peer, if valid, is the client's address, which
// the worker then need not ask the kernel for.
func AppendConn(dst, start []byte, seq uint64, peer netip.AddrPort) []byte {
	dst = strconv.AppendUint(append(dst, start...), seq, 10)
	if peer.IsValid() {
		dst = append(peer.AppendTo(append(dst, `,"peer":"`...)), '"')
	}
	return append(dst, "}}\n"...)
}

// Conn is a connection's line, as JSON.
type Conn struct {
	Cmd  string  `json:"cmd"`
	Type string  `json:"type"`
	Msg  ConnMsg `json:"msg"`
}

// ConnMsg is what a connection's line says of it.
type ConnMsg struct {
	Cmd      string `json:"cmd"`
	Listener string `json:"listener"`
	Seq      uint64 `json:"seq"`
	Peer     string `json:"peer,omitempty"`
}

// ConnLine is what ParseConn reads of a connection's line: its listener's
// name, its sequence number, and the client's address if the line gives
// one that parses (else the zero AddrPort).
type ConnLine struct {
	Listener []byte
	Seq      uint64
	Peer     netip.AddrPort
}

// ParseConn reads a line (without its end); ok if it carries a
// connection.
func ParseConn(line []byte) (c ConnLine, ok bool) {
	if rest, ok := bytes.CutPrefix(line, []byte(connPrefix+`"`)); ok {
		if name, rest, ok := bytes.Cut(rest, []byte(`","seq":`)); ok && plain(name) {
			if rest, ok := bytes.CutSuffix(rest, []byte("}}")); ok {
				digits, peer, hasPeer := bytes.Cut(rest, []byte(`,"peer":"`))
				if seq, ok := parseSeq(digits); ok {
					if !hasPeer {
						return ConnLine{Listener: name, Seq: seq}, true
					}
					if peer, ok := bytes.CutSuffix(peer, []byte(`"`)); ok && plain(peer) {
						return ConnLine{Listener: name, Seq: seq, Peer: parsePeer(string(peer))}, true
					}
				}
			}
		}
	}
	return jsonConn(line)
}

// parsePeer reads a line's client address; the zero AddrPort if it is
// not one.
func parsePeer(s string) netip.AddrPort {
	peer, _ := netip.ParseAddrPort(s)
	return peer
}

// jsonConn is ParseConn for any line, by reflection.
func jsonConn(line []byte) (ConnLine, bool) {
	var c Conn
	if json.Unmarshal(line, &c) != nil || c.Cmd != "NODE_HANDLE" || c.Msg.Cmd != "BATON_CONN" {
		return ConnLine{}, false
	}
	return ConnLine{Listener: []byte(c.Msg.Listener), Seq: c.Msg.Seq, Peer: parsePeer(c.Msg.Peer)}, true
}

// plain reports whether a JSON string's contents are the string itself:
// printable ASCII, no quote or escape.
func plain(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// parseSeq reads a JSON number that is a uint64 written plainly (no sign,
// leading zero, fraction or exponent); false for anything else, which
// JSON then reads.
func parseSeq(digits []byte) (uint64, bool) {
	if len(digits) == 0 || len(digits) > 19 || digits[0] == '0' && len(digits) > 1 {
		return 0, false // 19 digits never overflow
	}
	var n uint64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// Answer is a worker's answer for a connection. HasSeq says whether it
// named one; Closed, on a BATON_NACK, that its listener is closed. Max is
// a BATON_BATCH's: the most connections the worker reads in one message.
type Answer struct {
	Cmd    string
	Seq    uint64
	HasSeq bool
	Closed bool
	Max    int
}

// A worker that reads several connections in one message (their lines
// and their descriptors, in the same order) says so once, first thing:
// AppendBatch's line. MaxBatch is the most baton then sends in one
// message, and BatchBytes the most bytes: far less than a worker reads
// at once (64 KiB for handoff), so that every read of the channel holds
// whole messages. A worker that does not say it (Node.js) gets one
// connection per message.
const (
	MaxBatch   = 16
	BatchBytes = 8 << 10
)

// AppendBatch appends the line (with its end) by which a worker says it
// reads up to max connections in one message.
func AppendBatch(dst []byte, max int) []byte {
	return append(strconv.AppendInt(append(dst, `{"cmd":"BATON_BATCH","max":`...), int64(max), 10), "}\n"...)
}

// The answers for a connection taken, as handoff and Node.js write them.
var (
	ackStart = []byte(`{"cmd":"BATON_ACK","seq":`)
	ackEnd   = []byte("}\n")
	nodeAck  = []byte(`{"cmd":"NODE_HANDLE_ACK"}` + "\n")
)

// AppendAnswer appends the line (with its end) answering connection seq
// with cmd (BATON_ACK or BATON_NACK); closed, with a BATON_NACK: its
// listener is closed.
func AppendAnswer(dst []byte, cmd string, seq uint64, closed bool) []byte {
	dst = strconv.AppendUint(append(append(append(dst, `{"cmd":"`...), cmd...), `","seq":`...), seq, 10)
	if closed {
		dst = append(dst, `,"closed":true`...)
	}
	return append(dst, "}\n"...)
}

// ParseAnswer reads a worker's line (with its end); false if it is not
// JSON.
func ParseAnswer(line []byte) (Answer, bool) {
	if digits, ok := bytes.CutPrefix(line, ackStart); ok {
		if digits, ok = bytes.CutSuffix(digits, ackEnd); ok {
			if seq, ok := parseSeq(digits); ok {
				return Answer{Cmd: "BATON_ACK", Seq: seq, HasSeq: true}, true
			}
		}
	}
	if bytes.Equal(line, nodeAck) {
		return Answer{Cmd: "NODE_HANDLE_ACK"}, true
	}
	return jsonAnswer(line)
}

// jsonAnswer is ParseAnswer for any line, by reflection.
func jsonAnswer(line []byte) (Answer, bool) {
	var a struct {
		Cmd    string  `json:"cmd"`
		Seq    *uint64 `json:"seq"`
		Closed bool    `json:"closed"`
		Max    int     `json:"max"`
	}
	if json.Unmarshal(line, &a) != nil {
		return Answer{}, false
	}
	out := Answer{Cmd: a.Cmd, HasSeq: a.Seq != nil, Closed: a.Closed, Max: a.Max}
	if a.Seq != nil {
		out.Seq = *a.Seq
	}
	return out, true
}

// What Go's net sets on every TCP connection it accepts, and baton on
// each round-robin listener, so that the connections it passes inherit
// it (Linux copies a listening socket's options to the connections it
// accepts): TCP_NODELAY, and keepalive probes after KeepAliveIdle idle,
// every KeepAliveInterval, KeepAliveCount of them.
const (
	KeepAliveIdle     = 15 * time.Second
	KeepAliveInterval = 15 * time.Second
	KeepAliveCount    = 9
)
