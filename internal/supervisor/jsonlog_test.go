package supervisor

import (
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/config"
	"github.com/batonhq/baton/internal/linering"
)

func TestJSONLine(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		name, text string
		cut        bool
		want       string
	}{
		{"plain", "hello", false, `"level":"INFO","msg":"worker output","worker":1,"pid":42,"generation":3,"stream":"stderr","line":"hello"}`},
		{"empty", "", false, `"line":""}`},
		{"object nested", `{"pid":1,"level":"debug"}`, false, `"pid":42,"generation":3,"stream":"stderr","json":{"pid":1,"level":"debug"}}`},
		{"object compacted", "{\t\"a\":\r [1, 2] }", false, `"json":{"a":[1,2]}}`},
		{"array stays text", `[1,2]`, false, `"line":"[1,2]"}`},
		{"invalid json", `{"a":`, false, `"line":"{\"a\":"}`},
		{"invalid utf-8", "a\xffb", false, `"line":"a\ufffdb"}`},
		{"object with invalid utf-8", "{\"s\":\"\xff\"}", false, `"line":"{\"s\":\"\ufffd\"}"}`},
		{"cut object", `{"a":1}`, true, `"line":"{\"a\":1}","cut":true}`},
		{"level prefix", "<3>disk full", false, `"level":"ERROR",`},
		{"warning prefix", "<4>{\"a\":1}", false, `"level":"WARN",`},
	} {
		got := string(jsonLine(linering.Line{Time: at, Slot: 1, Generation: 3, PID: 42, Stream: "stderr", Text: c.text, Cut: c.cut}))
		if !strings.HasPrefix(got, `{"time":"2026-01-02T03:04:05Z",`) || !strings.HasSuffix(got, "}\n") || strings.Count(got, "\n") != 1 {
			t.Errorf("%s: %q is not one record", c.name, got)
		}
		if !strings.Contains(got, c.want) {
			t.Errorf("%s: %q lacks %q", c.name, got, c.want)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(got), &m); err != nil {
			t.Errorf("%s: %q: %v", c.name, got, err)
		}
	}
}

// With JSON output every line baton writes decodes, its own and its
// workers' of every kind, through a worker's panic and restart.
func TestJSONOutputDecodes(t *testing.T) {
	once := filepath.Join(t.TempDir(), "panicked")
	cfg := testConfig("chatty", 1, func(c *config.Config) { c.Worker.Env["PANIC_ONCE"] = once })
	h := startHarnessWith(t, cfg, func(h *harness, o *Options) {
		w := io.MultiWriter(h.out, tlogWriter{t})
		o.Logger = slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
		o.OutputJSON = true
	})
	h.waitLog(regexp.MustCompile(`"msg":"worker exited unexpectedly(?s:.*)"msg":"all workers ready"`))
	h.cancel()
	if err := h.wait(); err != nil {
		t.Fatal(err)
	}
	var own, nested, replaced, panicked, errors int
	streams, pids := map[string]bool{}, map[float64]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(h.out.String(), "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if m["msg"] != workerMsg {
			own++
			continue
		}
		streams[m["stream"].(string)] = true
		pids[m["pid"].(float64)] = true
		if j, ok := m["json"].(map[string]any); ok && j["msg"] == "from the worker" {
			nested++
		}
		text, _ := m["line"].(string)
		if strings.Contains(text, "\ufffd") {
			replaced++
		}
		if strings.HasPrefix(text, "panic: chatty worker") && m["stream"] == "stderr" {
			panicked++
		}
		if m["level"] == "ERROR" && text == "an error" {
			errors++
		}
	}
	if own == 0 || nested != 4 || replaced != 8 || panicked != 1 || errors != 4 || len(streams) != 2 || len(pids) != 2 || pids[1] {
		t.Errorf("baton's lines %d, nested objects %d (want 4), lines with U+FFFD %d (want 8), panics %d (want 1), error lines %d (want 4), streams %v, pids %v (want 2 workers')",
			own, nested, replaced, panicked, errors, streams, pids)
	}
}
