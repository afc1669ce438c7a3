package integration

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"
)

// baton logs -n 5 prints exactly the last 5 lines, each with its time,
// slot, pid and stream; what a worker printed reaches the terminal as
// text (an escape sequence, a bidi override, a C1 control, a byte that is
// not UTF-8: each shown as something visible); baton logs -f then shows
// the lines of a worker started after it began, until interrupted.
func TestLogs(t *testing.T) {
	control := filepath.Join(t.TempDir(), "ctl.sock")
	chatty := `printf 'evil \342\200\256rlo \302\233 \233 \033[2J\n'; i=0; while [ $i -lt 20 ]; do echo "line $i"; i=$((i+1)); done; exec "$0"`
	b := startBaton(t, "--workers", "1", "--control", control, "--", "sh", "-c", chatty, bin.hello)
	code, out := ctl(t, "logs", "--control", control, "-n", "5")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	reLine := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[worker 0 pid \d+ (stdout|stderr)\] `)
	if code != 0 || len(lines) != 5 {
		t.Fatalf("baton logs -n 5: exit %d, %d lines:\n%s", code, len(lines), out)
	}
	for _, l := range lines {
		if !reLine.MatchString(l) {
			t.Errorf("line %q lacks its time, slot, pid or stream", l)
		}
	}
	if !strings.Contains(out, "line 19\n") || strings.Contains(out, "line 15\n") {
		t.Errorf("not the last 5 lines:\n%s", out)
	}
	code, out = ctl(t, "logs", "--control", control, "-n", "30")
	if want := "evil \\u202erlo \\u009b \ufffd \\x1b[2J\n"; code != 0 || !strings.Contains(out, want) {
		t.Errorf("baton logs: exit %d, no line %q:\n%q", code, want, out)
	}
	for _, r := range out {
		if r != '\n' && r != '\t' && (unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)) {
			t.Errorf("baton logs passed %U to the terminal:\n%q", r, out)
		}
	}

	follow := start(t, nil, bin.baton, "logs", "--control", control, "-f", "-n", "1")
	// Once it printed the last line it follows (baton takes the last
	// lines and the new ones at once).
	follow.out.wait(regexp.MustCompile(`\[worker 0 pid \d+ `), 30*time.Second)
	if code, out := ctl(t, "scale", "--control", control, "2"); code != 0 {
		t.Fatalf("scale 2: exit %d: %s", code, out)
	}
	pids := b.workerPIDs()
	line := follow.out.wait(regexp.MustCompile(fmt.Sprintf(`\[worker 1 pid %d stderr\] hello: serving on`, pids[1])), 30*time.Second)
	t.Logf("followed: %s", line)
	syscall.Kill(follow.cmd.Process.Pid, syscall.SIGINT)
	if code := follow.waitExit(10 * time.Second); code != 0 {
		t.Errorf("baton logs -f exited %d on SIGINT, want 0", code)
	}
}

// A worker that prints a 10 MB line without a newline costs baton no more
// than the line's first 4 KiB in its ring: its resident memory stays
// below 30 MB (a build without the race detector).
func TestLogsLongLine(t *testing.T) {
	control := filepath.Join(t.TempDir(), "ctl.sock")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	long := `head -c 10000000 /dev/zero | tr '\0' x; exec "$0"`
	p := start(t, nil, batonPlain(t), "run", "--listen", "http=tcp://"+addr, "--workers", "1", "--control", control, "--", "sh", "-c", long, bin.hello)
	waitServing(t, control)
	rss := sampleRSS(p.cmd.Process.Pid)
	// The line has passed through once the next one (hello's) is logged.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, out := ctl(t, "logs", "--control", control, "-n", "2")
		if code == 0 && strings.Contains(out, "hello: serving on") && strings.Contains(out, "xxxx [cut]") {
			if i := strings.Index(out, "xxxx [cut]"); i > 5000 {
				t.Errorf("the long line is kept as %d bytes, want its first 4 KiB", i)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the 10 MB line and the next one did not show within 30s:\n%.300s", out)
		}
	}
	if kb := rss.end(); kb > 30<<10 {
		t.Errorf("baton's resident memory reached %d kB with a 10 MB line, want below 30 MB", kb)
	} else {
		t.Logf("baton's resident memory at most %d kB", kb)
	}
}
