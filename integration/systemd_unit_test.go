package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batonhq/baton/integration/nspawn"
)

// Under a real systemd: `baton unit app --install` writes units that serve
// as soon as app.socket starts, and the workers' lines are in the journal
// with fields that say whose they are: `journalctl -u app BATON_WORKER=1`
// returns worker 1's lines and only those, each named as the worker's.
// `baton reload app` and `baton status app.service` reach its baton.
func TestSystemdUnitInstallAndJournal(t *testing.T) {
	if err := nspawn.Available(); err != nil {
		t.Skip(err)
	}
	ctx := withTimeout(t, 3*time.Minute)
	m, _ := bootWithBinaries(t, ctx)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	out, err := m.Run(ctx, optDir+"/baton", "unit", "app", "--listen", "http=tcp://"+addr, "--baton", optDir+"/baton", "--install", "--", optDir+"/hello")
	if err != nil || !strings.Contains(out, "wrote /etc/systemd/system/app.service") {
		t.Fatalf("baton unit app --install: %v\n%s", err, out)
	}
	if _, err := m.Systemctl(ctx, "start", "app.socket"); err != nil {
		t.Fatal(err)
	}
	body, err := getOnce(addr, "/") // socket activation starts app.service
	if err != nil || !strings.HasPrefix(body, "hello from pid") {
		t.Fatalf("first request through the generated app.socket: %q, %v", body, err)
	}
	if err := m.WaitActive(ctx, "app.service"); err != nil {
		t.Fatal(err)
	}
	// baton reload app finds app.service's baton in its RuntimeDirectory=.
	if out, err := m.Run(ctx, optDir+"/baton", "reload", "app"); err != nil || !strings.Contains(out, "reload ok: generation 2") {
		t.Errorf("baton reload app inside: %v\n%s", err, out)
	}
	if out, err := m.Run(ctx, optDir+"/baton", "status", "app.service"); err != nil || !strings.Contains(out, "app.service") {
		t.Errorf("baton status app.service inside: %v\n%s", err, out)
	}

	// Every worker says "hello: serving on ADDR pid N" on stderr.
	var entries []map[string]string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		js, err := m.Run(ctx, "journalctl", "-u", "app.service", "BATON_WORKER=1", "-o", "json", "--no-pager")
		if err != nil {
			t.Fatalf("journalctl: %v\n%s", err, js)
		}
		entries = entries[:0]
		for _, line := range strings.Split(strings.TrimSpace(js), "\n") {
			var e map[string]string
			if json.Unmarshal([]byte(line), &e) == nil {
				entries = append(entries, e)
			}
		}
		if len(entries) >= 2 || time.Now().After(deadline) { // generations 1 and 2
			break
		}
	}
	if len(entries) < 2 {
		t.Fatalf("journalctl -u app BATON_WORKER=1: %d entries, want worker 1's line of each generation:\n%+v", len(entries), entries)
	}
	gens := map[string]bool{}
	for _, e := range entries {
		if e["BATON_WORKER"] != "1" || !strings.HasPrefix(e["MESSAGE"], "hello: serving on "+addr+" pid "+e["WORKER_PID"]) || e["BATON_STREAM"] != "stderr" {
			t.Errorf("entry %v: want worker 1's own line, with its pid", e)
		}
		// journalctl shows it as "hello[PID]", the worker's, not baton's.
		if e["SYSLOG_IDENTIFIER"] != "hello" || e["SYSLOG_PID"] != e["WORKER_PID"] {
			t.Errorf("entry %v: want SYSLOG_IDENTIFIER hello and SYSLOG_PID its WORKER_PID", e)
		}
		gens[e["BATON_GENERATION"]] = true
	}
	if !gens["1"] || !gens["2"] {
		t.Errorf("worker 1's lines come from generations %v, want 1 and 2", gens)
	}
}
