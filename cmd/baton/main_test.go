package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A JSON log line gives durations in seconds, not nanoseconds.
func TestJSONDurationsInSeconds(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&b, &slog.HandlerOptions{ReplaceAttr: seconds}))
	log.Info("worker ready", "after", 101*time.Millisecond, "count", 2, slog.Group("g", "wait", 2*time.Second))
	if got := b.String(); !strings.Contains(got, `"after":0.101,"count":2,"g":{"wait":2}`) {
		t.Errorf("got %s", got)
	}
}
