package console

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/supervisor"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// at is the fixed clock of the golden states.
var at = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func serving() *supervisor.Status {
	return &supervisor.Status{
		At: at, PID: 4100, Version: "0.2.0", Started: at.Add(-3 * time.Hour), Phase: "running", Ready: true, Generation: 3, Balance: "round-robin",
		Listeners:  []supervisor.StatusListener{{Name: "http", Address: "tcp://127.0.0.1:8080"}, {Name: "admin", Address: "unix:///run/app/admin.sock"}},
		Budget:     supervisor.StatusBudget{Used: 2, Limit: 10, WindowSeconds: 60},
		LastReload: &supervisor.StatusReload{At: at.Add(-5 * time.Minute), OK: true},
		Workers: []supervisor.StatusWorker{
			{Slot: 0, PID: 4242, Generation: 3, State: "ready", Started: at.Add(-5 * time.Minute), Restarts: 2, CPUSeconds: 30, RSSBytes: 12 << 20, Status: "serving 40 req/s"},
			{Slot: 1, PID: 4243, Generation: 3, State: "ready", Started: at.Add(-90 * time.Second), CPUSeconds: 9, RSSBytes: 900 << 10},
		},
	}
}

func TestTable(t *testing.T) {
	tests := map[string]func() (*supervisor.Status, *supervisor.Status){
		"serving": func() (*supervisor.Status, *supervisor.Status) { return serving(), nil },
		"reloading": func() (*supervisor.Status, *supervisor.Status) {
			st := serving()
			st.Phase, st.LastReload = "reloading", &supervisor.StatusReload{At: at.Add(-26 * time.Hour), Error: "supervisor: reload rolled back: worker 1 (pid 4000) exited before it was ready: exit status 1"}
			st.Workers = append(st.Workers,
				supervisor.StatusWorker{Slot: 0, PID: 4300, Generation: 4, State: "starting", Started: at.Add(-2 * time.Second), RSSBytes: 3 << 20},
				supervisor.StatusWorker{Slot: 1, PID: 4301, Generation: 4, State: "starting", Started: at.Add(-2 * time.Second), Status: "warming\nup\tcaches"})
			st.Workers[1].State = "draining"
			return st, nil
		},
		"gave-up": func() (*supervisor.Status, *supervisor.Status) {
			st := serving()
			st.Budget = supervisor.StatusBudget{Used: 10, Limit: 10, WindowSeconds: 60, Spent: true}
			st.Workers = st.Workers[:1]
			return st, nil
		},
		"stopping": func() (*supervisor.Status, *supervisor.Status) {
			st := serving()
			st.Phase, st.Ready, st.LastReload = "stopping", false, nil
			for i := range st.Workers {
				st.Workers[i].State = "stopping"
			}
			return st, nil
		},
		"no-workers": func() (*supervisor.Status, *supervisor.Status) {
			st := serving()
			st.Phase, st.Ready, st.Generation, st.LastReload, st.Workers = "starting", false, 0, nil, nil
			return st, nil
		},
		// --watch: cpu over the second since the previous sample.
		"watch": func() (*supervisor.Status, *supervisor.Status) {
			prev := serving()
			prev.At = at.Add(-time.Second)
			prev.Workers[0].CPUSeconds = 29.5
			return serving(), prev
		},
	}
	for name, state := range tests {
		t.Run(name, func(t *testing.T) {
			st, prev := state()
			var b bytes.Buffer
			if err := Table(&b, st, prev, st.At); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/console -update to write it)", err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("got:\n%s\nwant (%s):\n%s", b.Bytes(), golden, want)
			}
		})
	}
}
