package supervisor

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/batonhq/baton/internal/linering"
)

// With --log-format json every line on baton's stderr is one JSON object,
// a worker's too (docs/architecture.md, Output): baton's keys, then the
// worker's line either as the string "line" or, when it is itself one
// JSON object, nested as "json". Nested rather than merged: a worker's
// keys can then never overwrite baton's (time, level, worker, pid), and
// each key keeps one type, which log stores that index fields need.

// workerRecord is a worker's line as a JSON log record.
type workerRecord struct {
	Time       time.Time       `json:"time"`
	Level      string          `json:"level"`
	Msg        string          `json:"msg"`
	Worker     int             `json:"worker"`
	PID        int             `json:"pid"`
	Generation int             `json:"generation"`
	Stream     string          `json:"stream"`
	Line       *string         `json:"line,omitempty"`
	JSON       json.RawMessage `json:"json,omitempty"`
	Cut        bool            `json:"cut,omitempty"`
}

// workerMsg is the msg of every worker line's record.
const workerMsg = "worker output"

// jsonLine returns l as one JSON object and a newline. The level is the
// one an sd-daemon "<N>" prefix gives (as journald reads it), else info.
func jsonLine(l linering.Line) []byte {
	prio, text := priority(l.Text)
	rec := workerRecord{Time: l.Time, Level: slogLevel(prio).String(), Msg: workerMsg,
		Worker: l.Slot, PID: l.PID, Generation: l.Generation, Stream: l.Stream, Cut: l.Cut}
	if obj := []byte(text); !l.Cut && isObject(obj) {
		// Compacted: a worker's object may hold a \r or a tab between
		// tokens; the record stays one line.
		var b bytes.Buffer
		if json.Compact(&b, obj) == nil {
			rec.JSON = b.Bytes()
		}
	}
	if rec.JSON == nil {
		// Invalid UTF-8 becomes U+FFFD: the record is valid JSON whatever
		// a worker writes.
		rec.Line = &text
	}
	b, err := json.Marshal(rec)
	if err != nil {
		// Only a RawMessage json.Marshal refuses; the text cannot fail.
		rec.JSON, rec.Line = nil, &text
		b, _ = json.Marshal(rec)
	}
	return append(b, '\n')
}

// isObject reports whether b is one JSON object in valid UTF-8 (the
// encoder does not check the UTF-8 inside a RawMessage's strings).
func isObject(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) > 0 && b[0] == '{' && utf8.Valid(b) && json.Valid(b)
}

// slogLevel maps a syslog priority to slog's level names.
func slogLevel(p journal.Priority) slog.Level {
	switch {
	case p <= journal.PriErr:
		return slog.LevelError
	case p == journal.PriWarning:
		return slog.LevelWarn
	case p == journal.PriDebug:
		return slog.LevelDebug
	}
	return slog.LevelInfo
}
