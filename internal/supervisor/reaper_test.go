package supervisor

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/lifecycle"
)

// While a self-upgrade is under way the reaper waits for the workers
// alone: the new baton's exit is tableflip's to collect (its Wait would
// get ECHILD otherwise, and the upgrade's failure would say nothing of
// how it ended). Once the upgrade is over, every child is reaped again.
func TestReaperLeavesTheUpgradersChild(t *testing.T) {
	sigchld := notifySIGCHLD()
	defer signal.Stop(sigchld)
	r := newReaper()
	out := make(chan any, 8)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(sigchld, out, quit, func() {})
	}()
	defer func() {
		close(quit)
		<-done
	}()
	exited := func() lifecycle.Exited {
		t.Helper()
		select {
		case ev := <-out:
			return ev.(lifecycle.Exited)
		case <-time.After(10 * time.Second):
			t.Fatal("no exit reported")
		}
		panic("unreachable")
	}

	r.spareOthers(true)
	successor := exec.Command("/bin/sh", "-c", "exit 7") // as tableflip starts it
	if err := successor.Start(); err != nil {
		t.Fatal(err)
	}
	worker, err := os.StartProcess("/bin/sh", []string{"sh", "-c", "exit 3"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	r.add(worker.Pid)
	if ev := exited(); ev.PID != worker.Pid || ev.How != "exit status 3" {
		t.Errorf("reported %+v, want the worker (pid %d) with exit status 3", ev, worker.Pid)
	}
	var ee *exec.ExitError
	if err := successor.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("the upgrader's own Wait for its child: %v, want exit status 7", err)
	}
	select {
	case ev := <-out:
		t.Errorf("reported %+v, the upgrader's child", ev)
	default:
	}

	// An orphan that exits during the upgrade is reaped once it is over.
	orphan, err := os.StartProcess("/bin/sh", []string{"sh", "-c", "exit 5"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	r.spareOthers(false)
	if ev := exited(); ev.PID != orphan.Pid || ev.How != "exit status 5" {
		t.Errorf("reported %+v, want the orphan (pid %d) with exit status 5", ev, orphan.Pid)
	}
}
