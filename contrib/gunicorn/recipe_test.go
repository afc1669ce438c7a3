// Package gunicorn holds the tests of baton.conf.py, baton's gunicorn
// settings; it has no Go code of its own.
package gunicorn

import (
	"os/exec"
	"testing"
)

// debianPython is Debian's Python 3, the one Debian's gunicorn runs on.
const debianPython = "/usr/bin/python3"

// A gunicorn gthread worker gets SIGTERM twice when it is told to stop.
// With the second one handled inside the first's handler where that one
// held an Event's lock, the worker's main loop waited on itself: every
// request on its connections timed out (TestRealServers, 5 of 3,996 in
// one run in ten). testdata/stop_signals.py sends the second SIGTERM at
// each step of the handler in turn.
func TestStopSignalAtEveryStep(t *testing.T) {
	if _, err := exec.LookPath(debianPython); err != nil {
		t.Skipf("%s: %v; make test installs it", debianPython, err)
	}
	out, err := exec.Command(debianPython, "testdata/stop_signals.py", "baton.conf.py").CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatal(err)
	}
}
