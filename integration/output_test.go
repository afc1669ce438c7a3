package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/loadtest"
)

// A worker printing 100 MB while nobody reads baton's standard error (a
// full pipe, a journald under pressure) stalls nothing: baton keeps
// answering, a reload completes as usual and no request fails. The lines
// that did not fit are dropped, counted, and said to be once the reader
// comes back.
func TestUnreadStderrStallsNothing(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "ctl.sock")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// Only the first worker to get there floods (mkdir is atomic).
	flood := fmt.Sprintf(`mkdir %s 2>/dev/null && (head -c 100000000 /dev/zero | tr '\0' x | fold -w 99 &); exec "$0"`, filepath.Join(dir, "flooding"))
	p, read := startUnread(t, nil, bin.baton, "run", "--listen", "http=tcp://"+addr, "--workers", "2",
		"--control", socket, "--", "sh", "-c", flood, bin.hello)
	waitServing(t, socket)
	g := startLoad(t, addr, loadtest.KeepAlive, 32)

	// Once baton's stderr pipe is full, everything baton writes meets a
	// reader that does not read.
	waitPipeFull(t, p.outPipe)
	start := time.Now()
	code, out := ctl(t, "reload", "--control", socket, "--timeout", "30s")
	took := time.Since(start)
	if code != 0 || !strings.Contains(out, "reload ok: generation 2") {
		t.Fatalf("baton reload with stderr unread: exit %d after %s: %s", code, took, out)
	}
	waitServed(t, g, 500)
	r := g.Stop()
	st := stats(t, socket)
	t.Logf("reload took %s with stderr unread; %d output lines dropped; load: %s", took.Round(time.Millisecond), st.OutputDrops, r)
	if r.Failed() != 0 {
		t.Errorf("%d requests failed: %s %v", r.Failed(), r, r.Samples)
	}
	if st.OutputDrops == 0 {
		t.Errorf("stats count no output dropped")
	}

	// The reader comes back: baton's log resumes with a count of what it
	// lost, and goes on.
	read()
	p.out.wait(regexp.MustCompile(`msg="output dropped: baton's standard error is not read fast enough" lines=\d+`), 30*time.Second)
	p.out.wait(regexp.MustCompile(`msg="reload done"`), 30*time.Second)
}

// waitServing waits, by the control socket alone, until baton's first
// generation is ready (stats name a serving generation).
func waitServing(t *testing.T, socket string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := control.Ask(ctx, socket, control.Request{Command: "stats"})
		cancel()
		if err == nil && r.Stats.Generation > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("baton not serving within 30s: %v", err)
		}
	}
}

// waitPipeFull waits until the pipe whose read end is r is more than half
// full: with nobody reading and a worker printing 100 MB, it is full a
// moment later, and stays so.
func waitPipeFull(t *testing.T, r *os.File) {
	t.Helper()
	size, err := unix.FcntlInt(r.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(os.NewSyscallError("fcntl F_GETPIPE_SZ", err))
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ) // FIONREAD
		if err != nil {
			t.Fatal(os.NewSyscallError("ioctl FIONREAD", err))
		}
		if n > size/2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("baton's output pipe holds %d of %d bytes after 30s of a worker printing 100 MB", n, size)
		}
	}
}
