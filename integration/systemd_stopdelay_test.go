package integration

import (
	"strings"
	"testing"
	"time"
)

// Under systemd the lame duck counts against TimeoutStopSec=. baton asks
// for more time (EXTEND_TIMEOUT_USEC=, stop.delay + drain_timeout + 5s)
// as it becomes a lame duck, so that even a unit whose TimeoutStopSec= is
// shorter than stop.delay stops cleanly (Result=success, no SIGKILL), and
// systemctl shows why the service is still there.
func TestSystemdStopDelay(t *testing.T) {
	const delay, timeoutStop = 4 * time.Second, 2 * time.Second
	ctx := withTimeout(t, 3*time.Minute)
	a := bootAppWith(t, ctx, appOptions{start: true, extraConfig: "\n[stop]\ndelay = \"" + delay.String() + "\"\n"})
	m := a.m
	if err := m.WriteFile("/run/systemd/system/app.service.d/stop.conf", []byte("[Service]\nTimeoutStopSec="+timeoutStop.String()+"\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Show(ctx, "app.service", "TimeoutStopUSec"); err != nil || got != timeoutStop.String() {
		t.Fatalf("TimeoutStopUSec = %q (%v), want %s", got, err, timeoutStop)
	}
	start := time.Now()
	if _, err := m.Systemctl(ctx, "stop", "--no-block", "app.service"); err != nil {
		t.Fatal(err)
	}
	var status, state string
	for deadline := time.Now().Add(delay + time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if st, err := m.Show(ctx, "app.service", "StatusText"); err == nil && strings.Contains(st, "lame duck (stop.delay)") && status == "" {
			status = st
		}
		if state, _ = m.Show(ctx, "app.service", "ActiveState"); state == "inactive" || state == "failed" {
			break
		}
	}
	took := time.Since(start)
	result, _ := m.Show(ctx, "app.service", "Result")
	t.Logf("systemctl stop with stop.delay %s and TimeoutStopSec=%s: %s (result %s) after %s; StatusText during the delay: %q",
		delay, timeoutStop, state, result, took.Round(time.Millisecond), status)
	if state != "inactive" || result != "success" {
		t.Errorf("app.service ended %s with result %q, want inactive and success (not cut short at TimeoutStopSec=%s)", state, result, timeoutStop)
	}
	if took < delay {
		t.Errorf("app.service stopped %s after systemctl stop, before stop.delay %s was over", took.Round(time.Millisecond), delay)
	}
	if status == "" {
		t.Error("StatusText never said the service is a lame duck")
	}
}
