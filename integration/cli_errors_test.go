package integration

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/cli-errors.golden")

// Each way an operator gets baton's command line wrong, or asks a running
// baton (3 workers) what it refuses: its stderr, one line per message
// "baton CMD: what is wrong: what to do", and its exit code (2 for every
// usage error), against testdata/cli-errors.golden. Run with -update to
// rewrite it.
func TestCLIErrors(t *testing.T) {
	dir := t.TempDir()
	b := startConfigBaton(t, hellos(3, ""))
	for name, command := range map[string][]string{"good.toml": nil, "missing-worker.toml": {"./no-such-server"}} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(batonConfig("127.0.0.1:1", 2, command, "")), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cases := [][]string{
		{"scale", "abc"},
		{"scale", "-5"},
		{"scale", "0"},
		{"scale"},
		{"scale", "app", "1", "2"},
		{"restart", "abc"},
		{"reload", "app", "now"},
		{"status", "../app"},
		{"status", "no-such-app"},
		{"status", "app", "--control", "$CONTROL"},
		{"logs", "--err"},
		{"logs", "-n", "-1"},
		{"logs", "-n", "20000"},
		{"status", "--json", "--watch"},
		{"check", "$DIR/good.toml"},
		{"check"},
		{"check", "$DIR/good.toml", "$DIR/other.toml"},
		{"check", "$DIR/missing.toml"},
		{"check", "$DIR/missing-worker.toml"},
		{"run", "$HELLO", "--listen", "http=tcp://127.0.0.1:1"},
		{"run", "--listen", "http=tcp://127.0.0.1:1", "--", "no-such-server"},
		{"frobnicate"},
		{"reload", "--control", "$DIR/none.sock"},
	}
	// A SERVICE names the baton (these look in $DIR, the user services'
	// runtime directories, and /run, where no-such-app has none).
	byService := map[string]bool{"status ../app": true, "status no-such-app": true}
	expand := strings.NewReplacer("$DIR", dir, "$HELLO", bin.hello)
	hide := strings.NewReplacer(dir, "$DIR", bin.hello, "$HELLO", b.control, "$CONTROL")
	var got bytes.Buffer
	for _, c := range cases {
		args := make([]string, len(c))
		for i, a := range c {
			args[i] = expand.Replace(a)
		}
		if !strings.Contains(strings.Join(args, " "), "--control") && !byService[strings.Join(args, " ")] && args[0] != "check" && args[0] != "run" && args[0] != "frobnicate" {
			args = append(args, "--control", b.control)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, bin.baton, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin", "XDG_RUNTIME_DIR="+dir) // in the messages
		err := cmd.Run()
		cancel()
		code := cmd.ProcessState.ExitCode()
		if code < 0 {
			t.Fatalf("baton %v: %v", args, err)
		}
		fmt.Fprintf(&got, "$ baton %s\n%sexit %d\n\n", hide.Replace(strings.Join(args, " ")), hide.Replace(stderr.String()), code)
	}
	path := filepath.Join("testdata", "cli-errors.golden")
	if *updateGolden {
		if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("the command line's errors differ from %s (rerun with -update once they are right):\n%s", path, got.String())
	}
}
