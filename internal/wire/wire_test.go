package wire

import (
	"bytes"
	"encoding/json"
	"testing"
)

// A connection's line is what JSON makes of it, whatever the listener's
// name.
func TestConnLine(t *testing.T) {
	for _, name := range []string{"http", "", `a"b`, `a\b`, "<tag>&", "ünï", "a\tb", "x:y"} {
		got := AppendConn(nil, ConnStart(name), 17)
		want, err := json.Marshal(Conn{Cmd: "NODE_HANDLE", Type: "net.Socket", Msg: ConnMsg{Cmd: "BATON_CONN", Listener: name, Seq: 17}})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want)+"\n" {
			t.Errorf("line for %q: %s, want %s", name, got, want)
		}
		listener, seq, ok := ParseConn(bytes.TrimSuffix(got, []byte("\n")))
		if !ok || string(listener) != name || seq != 17 {
			t.Errorf("ParseConn(%s) = %q, %d, %v", got, listener, seq, ok)
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
	listener, seq, ok := ParseConn(line)
	wl, ws, wok := jsonConn(line)
	if ok != wok || ok && (string(listener) != string(wl) || seq != ws) {
		t.Errorf("ParseConn(%q) = %q, %d, %v; JSON reads %q, %d, %v", line, listener, seq, ok, wl, ws, wok)
	}
}

var answerLines = []string{
	string(AppendAnswer(nil, "BATON_ACK", 17, false)),
	string(AppendAnswer(nil, "BATON_NACK", 17, false)),
	string(AppendAnswer(nil, "BATON_NACK", 17, true)),
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
