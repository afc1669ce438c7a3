package integration

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/batonhq/baton/loadtest"
)

// chattyJSON is a worker that writes, before it execs hello ($0), plain
// lines and JSON objects on both streams and every kind of line a JSON
// log must survive; the first worker of the first generation adds a line
// longer than baton's 64 KiB.
const chattyJSON = `printf 'plain on stdout\n{"msg":"json on stdout","n":1,"nested":{"a":[1,2]}}\n'
printf 'plain on stderr\n{"time":"not baton","level":"bogus","worker":"w","pid":"p","msg":"json on stderr"}\n<3>{"msg":"an error"}\n' >&2
printf '<4>a warning\n{"msg":\t"tab\\tand cr"}\r\nnot utf-8 \377\376 and an escape \033[2J\n{"msg":"not utf-8 \377"}\n{"a":1}{"b":2}\n[1,2]\n{"half":\n\nnul \000 byte\n'
if [ "$BATON_GENERATION.$BATON_WORKER" = 1.0 ]; then head -c 70000 /dev/zero | tr '\0' x; echo; fi
exec "$0"`

// jsonWorkerLine is one line chattyJSON writes, as baton's record of it
// must carry it: the string "line", or the object "json" decoded.
type jsonWorkerLine struct {
	stream, level string
	line          string
	json          map[string]any
}

var chattyJSONLines = []jsonWorkerLine{
	{stream: "stdout", level: "INFO", line: "plain on stdout"},
	{stream: "stdout", level: "INFO", json: map[string]any{"msg": "json on stdout", "n": 1.0, "nested": map[string]any{"a": []any{1.0, 2.0}}}},
	{stream: "stderr", level: "INFO", line: "plain on stderr"},
	// baton's own keys, in the worker's object, stay the worker's.
	{stream: "stderr", level: "INFO", json: map[string]any{"time": "not baton", "level": "bogus", "worker": "w", "pid": "p", "msg": "json on stderr"}},
	{stream: "stderr", level: "ERROR", json: map[string]any{"msg": "an error"}},
	{stream: "stdout", level: "WARN", line: "a warning"},
	{stream: "stdout", level: "INFO", json: map[string]any{"msg": "tab\tand cr"}},
	{stream: "stdout", level: "INFO", line: "not utf-8 \ufffd\ufffd and an escape \x1b[2J"},
	{stream: "stdout", level: "INFO", line: `{"msg":"not utf-8 ` + "\ufffd" + `"}`},
	{stream: "stdout", level: "INFO", line: `{"a":1}{"b":2}`},
	{stream: "stdout", level: "INFO", line: `[1,2]`},
	{stream: "stdout", level: "INFO", line: `{"half":`},
	{stream: "stdout", level: "INFO", line: ""},
	{stream: "stdout", level: "INFO", line: "nul \x00 byte"},
}

// With --log-format json, under load, through two reloads and a worker's
// panic, every line baton writes decodes as one JSON object in valid
// UTF-8: its own lines, with durations in seconds, and its workers',
// each with the slot, pid and generation baton started it as and its
// stream, a worker's JSON line nested as "json", any other as "line"
// (docs/architecture.md, Output), a Go panic's trace line by line.
func TestJSONLogsUnderLoad(t *testing.T) {
	dir := t.TempDir()
	b := &configBaton{cfgPath: filepath.Join(dir, "baton.toml"), control: filepath.Join(dir, "baton.sock")}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	b.write(t, batonConfig(addr, 2, []string{"sh", "-c", chattyJSON, bin.hello}, ""))
	p := start(t, nil, bin.baton, "run", "--config", b.cfgPath, "--control", b.control, "--log-format", "json")
	b.baton = &baton{proc: p, addr: addr}
	reReady := regexp.MustCompile(`"msg":"worker ready"`)
	b.out.waitCount(reReady, 2, 30*time.Second)

	g := startLoad(t, addr, loadtest.KeepAlive, 8)
	reload := func(ready int) {
		t.Helper()
		if code, out := b.reloadCmd(t); code != 0 {
			t.Fatalf("reload: exit %d: %s", code, out)
		}
		b.out.waitCount(reReady, ready, 30*time.Second)
		waitServed(t, g, 200)
	}
	reload(4)

	if body, err := getOnce(addr, "/panic"); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("GET /panic = %q, %v; want a 500", body, err)
	}
	report := b.out.wait(regexp.MustCompile(`"line":"drain: panic: hello: /panic requested"`), 10*time.Second)
	var panicked struct{ PID int }
	if err := json.Unmarshal([]byte(report), &panicked); err != nil {
		t.Fatalf("the panic's report %q: %v", report, err)
	}
	b.out.wait(regexp.MustCompile(fmt.Sprintf(`"msg":"worker exited","slot":\d+,"pid":%d,`, panicked.PID)), 30*time.Second)
	b.out.waitCount(reReady, 5, 30*time.Second)
	waitServed(t, g, 200)
	reload(7)

	waitIdleAt(t, b.control)
	r := g.Stop()
	t.Logf("load across 2 reloads and a panic: %s", r)
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	if code := p.waitExit(30 * time.Second); code != 0 {
		t.Errorf("baton exited %d on SIGTERM, want 0", code)
	}
	<-p.out.done

	recs := decodeJSONLog(t, p.out.String())
	checkWorkerRecords(t, recs, panicked.PID)
	checkDurations(t, recs)
}

// decodeJSONLog decodes each line of out, failing the test for one that
// is not one JSON object in valid UTF-8 with a time, a level and a msg.
func decodeJSONLog(t *testing.T, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for i, line := range strings.Split(out, "\n") {
		var rec map[string]any
		err := json.Unmarshal([]byte(line), &rec)
		switch {
		case err != nil:
			t.Errorf("line %d does not decode: %v: %.300q", i+1, err, line)
		case rec == nil:
			t.Errorf("line %d is not an object: %.300q", i+1, line)
		case !utf8.ValidString(line):
			t.Errorf("line %d is not valid UTF-8: %.300q", i+1, line)
		default:
			for _, k := range []string{"time", "level", "msg"} {
				if _, ok := rec[k].(string); !ok {
					t.Errorf("line %d has no %s string: %.300q", i+1, k, line)
				}
			}
			recs = append(recs, rec)
		}
	}
	t.Logf("%d lines decoded", len(recs))
	return recs
}

// checkWorkerRecords checks the workers' records: whose each is, that
// every line of chattyJSON came out of each worker of the first
// generation as it should, the long line cut, and the panicked worker's
// trace.
func checkWorkerRecords(t *testing.T, recs []map[string]any, panicked int) {
	t.Helper()
	type startedAs struct{ slot, generation float64 }
	started := map[float64]startedAs{}
	for _, rec := range recs {
		if rec["msg"] == "worker started" {
			started[rec["pid"].(float64)] = startedAs{rec["slot"].(float64), rec["generation"].(float64)}
		}
	}
	byPID := map[float64][]map[string]any{}
	generations := map[float64]bool{}
	for _, rec := range recs {
		if rec["msg"] != "worker output" {
			continue
		}
		pid, _ := rec["pid"].(float64)
		as, ok := started[pid]
		if !ok || rec["worker"] != as.slot || rec["generation"] != as.generation {
			t.Errorf("worker record %v: want worker %v, generation %v of pid %v's start", rec, as.slot, as.generation, pid)
		}
		if s := rec["stream"]; s != "stdout" && s != "stderr" {
			t.Errorf("worker record %v: stream %v", rec, s)
		}
		_, isLine := rec["line"].(string)
		_, isJSON := rec["json"].(map[string]any)
		if isLine == isJSON {
			t.Errorf("worker record %v: want either a line string or a json object", rec)
		}
		byPID[pid] = append(byPID[pid], rec)
		generations[as.generation] = true
	}
	if !generations[1] || !generations[2] || !generations[3] {
		t.Errorf("worker records of generations %v, want 1, 2 and 3", generations)
	}

	for pid, as := range started {
		if as.generation != 1 {
			continue
		}
		for _, want := range chattyJSONLines {
			if !slices.ContainsFunc(byPID[pid], want.matches) {
				t.Errorf("worker %v (pid %v): no record of %+v", as.slot, pid, want)
			}
		}
		cut := 0
		for _, rec := range byPID[pid] {
			if l, _ := rec["line"].(string); strings.HasPrefix(l, "xxxx") {
				if rec["cut"] == true && len(l) == 64<<10 || rec["cut"] == nil && len(l) == 70000-64<<10 {
					cut++
				} else {
					t.Errorf("worker %v: the long line came out as %d bytes, cut %v", as.slot, len(l), rec["cut"])
				}
			}
		}
		if want := map[float64]int{0: 2, 1: 0}[as.slot]; cut != want {
			t.Errorf("worker %v: the long line came out in %d records, want %d", as.slot, cut, want)
		}
	}

	var trace []string
	for _, rec := range byPID[float64(panicked)] {
		if l, ok := rec["line"].(string); ok && rec["stream"] == "stderr" {
			trace = append(trace, l)
		}
	}
	for _, want := range []string{"drain: panic: hello: /panic requested", "goroutine ", "\t", "hello: drain: panic: hello: /panic requested"} {
		if !slices.ContainsFunc(trace, func(l string) bool { return strings.HasPrefix(l, want) }) {
			t.Errorf("the panicked worker's lines have none starting %q:\n%s", want, strings.Join(trace, "\n"))
		}
	}
	var exited bool
	for _, rec := range recs {
		exited = exited || rec["msg"] == "worker exited" && rec["pid"] == float64(panicked) && rec["how"] == "exit status 1"
	}
	if !exited {
		t.Errorf("no record of worker %d exiting 1 after its panic", panicked)
	}
}

// matches reports whether rec is baton's record of w.
func (w jsonWorkerLine) matches(rec map[string]any) bool {
	if rec["stream"] != w.stream || rec["level"] != w.level {
		return false
	}
	if w.json != nil {
		return reflect.DeepEqual(rec["json"], w.json)
	}
	return rec["line"] == w.line
}

// checkDurations checks that baton's durations are numbers of seconds:
// each well under a minute, where nanoseconds would be millions.
func checkDurations(t *testing.T, recs []map[string]any) {
	t.Helper()
	seen := map[string]int{}
	for _, rec := range recs {
		msg, _ := rec["msg"].(string)
		key := map[string]string{"worker ready": "after", "reload done": "took"}[msg]
		if strings.HasPrefix(msg, "generation ") && strings.HasSuffix(msg, " drained") {
			msg, key = "generation N drained", "after"
		}
		if key == "" {
			continue
		}
		seen[msg]++
		if d, ok := rec[key].(float64); !ok || d < 0 || d > 60 {
			t.Errorf("%q: %s is %v, want seconds", msg, key, rec[key])
		}
	}
	for _, msg := range []string{"worker ready", "reload done", "generation N drained"} {
		if seen[msg] == 0 {
			t.Errorf("no %q record to check its duration", msg)
		}
	}
}
