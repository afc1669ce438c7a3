package wire

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
)

// A connection's line is what JSON makes of it, whatever the listener's
// name and the client's address, and ParseConn reads it back.
func TestConnLine(t *testing.T) {
	peers := []netip.AddrPort{{}, netip.MustParseAddrPort("127.0.0.1:54321"), netip.MustParseAddrPort("[::1]:80"),
		netip.MustParseAddrPort("[::ffff:10.0.0.1]:1"), netip.MustParseAddrPort("[2001:db8::1]:65535")}
	for _, name := range []string{"http", "", `a"b`, `a\b`, "<tag>&", "ünï", "a\tb", "x:y"} {
		for _, peer := range peers {
			got := AppendConn(nil, ConnStart(name), 17, peer)
			msg := ConnMsg{Cmd: "BATON_CONN", Listener: name, Seq: 17}
			if peer.IsValid() {
				msg.Peer = peer.String()
			}
			want, err := json.Marshal(Conn{Cmd: "NODE_HANDLE", Type: "net.Socket", Msg: msg})
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want)+"\n" {
				t.Errorf("line for %q from %v: %s, want %s", name, peer, got, want)
			}
			c, ok := ParseConn(bytes.TrimSuffix(got, []byte("\n")))
			if !ok || string(c.Listener) != name || c.Seq != 17 || c.Peer != peer {
				t.Errorf("ParseConn(%s) = %q, %d, %v, %v", got, c.Listener, c.Seq, c.Peer, ok)
			}
		}
	}
}

var connLines = []string{
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":17}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":0}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":18446744073709551615}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":18446744073709551616}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":017}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":-1}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":1e3}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"h\u0074tp","seq":5}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"a\"b","seq":5}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":5}} `,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":5}}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":5}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":5,"x":1}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":5,"peer":"127.0.0.1:8"}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":5,"peer":"[::1]:8"}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":5,"peer":"[fe80::1%eth0]:8"}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":5,"peer":"127.0.0.1"}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":5,"peer":""}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":5,"peer":"1.2.3.4:5","peer":"6.7.8.9:1"}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":5,"peer":"\u0031.2.3.4:5"}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","seq":5,"peer":1}}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"BATON_CONN","listener":"http","peer":"1.2.3.4:5","seq":5}}`,
	`{"msg":{"seq":5,"listener":"http","cmd":"BATON_CONN"},"cmd":"NODE_HANDLE"}`,
	`{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"cmd":"OTHER","listener":"http","seq":5}}`,
	`{"cmd":"BATON_ACK","seq":5}`,
	`not json`,
	``,
}

// ParseConn reads every line as JSON does.
func TestParseConn(t *testing.T) {
	for _, line := range connLines {
		checkConn(t, []byte(line))
	}
}

func FuzzParseConn(f *testing.F) {
	for _, line := range connLines {
		f.Add([]byte(line))
	}
	f.Fuzz(checkConn)
}

func checkConn(t *testing.T, line []byte) {
	c, ok := ParseConn(line)
	w, wok := jsonConn(line)
	if ok != wok || ok && (string(c.Listener) != string(w.Listener) || c.Seq != w.Seq || c.Peer != w.Peer) {
		t.Errorf("ParseConn(%q) = %q, %d, %v, %v; JSON reads %q, %d, %v, %v", line, c.Listener, c.Seq, c.Peer, ok, w.Listener, w.Seq, w.Peer, wok)
	}
}

var answerLines = []string{
	string(AppendAnswer(nil, "BATON_ACK", 17, false)),
	string(AppendAnswer(nil, "BATON_NACK", 17, false)),
	string(AppendAnswer(nil, "BATON_NACK", 17, true)),
	string(AppendBatch(nil, MaxBatch)),
	`{"cmd":"BATON_BATCH","max":-1}` + "\n",
	`{"cmd":"BATON_BATCH","max":1e9}` + "\n",
	`{"cmd":"NODE_HANDLE_ACK"}` + "\n",
	`{"cmd":"NODE_HANDLE_NACK"}` + "\n",
	`{"cmd":"BATON_ACK","seq":0}` + "\n",
	`{"cmd":"BATON_ACK","seq":00}` + "\n",
	`{"cmd":"BATON_ACK","seq":18446744073709551615}` + "\n",
	`{"cmd":"BATON_ACK","seq":99999999999999999999}` + "\n",
	`{"cmd":"BATON_ACK","seq":1.0}` + "\n",
	`{"cmd":"BATON_ACK","seq":"1"}` + "\n",
	`{"cmd":"BATON_ACK"}` + "\n",
	`{"cmd":"BATON_ACK","seq":1}`,
	`{"cmd":"BATON_ACK","seq":1}}` + "\n",
	` {"cmd":"BATON_ACK","seq":1}` + "\n",
	`{"seq":1,"cmd":"BATON_ACK"}` + "\n",
	`{"cmd":"BATON_ACK","seq":1,"seq":2}` + "\n",
	`not json` + "\n",
	"\n",
}

// ParseAnswer reads every line as JSON does, and AppendAnswer writes
// what it reads back.
func TestParseAnswer(t *testing.T) {
	for _, line := range answerLines {
		checkAnswer(t, []byte(line))
	}
	if a, ok := ParseAnswer(AppendAnswer(nil, "BATON_NACK", 9, true)); !ok || a != (Answer{Cmd: "BATON_NACK", Seq: 9, HasSeq: true, Closed: true}) {
		t.Errorf("a NACK with closed reads %+v, %v", a, ok)
	}
	if a, ok := ParseAnswer(AppendBatch(nil, 16)); !ok || a != (Answer{Cmd: "BATON_BATCH", Max: 16}) {
		t.Errorf("a BATON_BATCH reads %+v, %v", a, ok)
	}
}

func FuzzParseAnswer(f *testing.F) {
	for _, line := range answerLines {
		f.Add([]byte(line))
	}
	f.Fuzz(checkAnswer)
}

func checkAnswer(t *testing.T, line []byte) {
	got, ok := ParseAnswer(line)
	want, wok := jsonAnswer(line)
	if ok != wok || got != want {
		t.Errorf("ParseAnswer(%q) = %+v, %v; JSON reads %+v, %v", line, got, ok, want, wok)
	}
}
