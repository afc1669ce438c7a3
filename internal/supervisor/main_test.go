package supervisor

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/batonhq/baton/handoff"
	"github.com/batonhq/baton/internal/spawn"
)

// TestMain lets the test binary play the shim and the workers, the way
// os/exec's tests re-execute themselves: the supervisor under test starts
// "<test binary> exec-worker -- <test binary> worker MODE".
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case spawn.ShimCommand:
			err := spawn.ExecWorker(os.Args[3:])
			fmt.Fprintln(os.Stderr, err)
			os.Exit(127)
		case "worker":
			os.Exit(testWorker(os.Args[2]))
		}
	}
	// The workers are this race-built binary: spare each the race
	// runtime's one-second sleep at exit (a race report still makes it
	// exit 66).
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	os.Exit(m.Run())
}

// testWorker is a worker: it serves "pid N listen_pid M names X" on its
// first inherited socket. Modes:
//
//	serve   notify READY=1, drain on SIGTERM
//	handoff  serve "http" as handoff.Listener returns it
//	silent  serve but never notify
//	fd-ready   serve and write a line to $BATON_READY_FD (ready = "fd")
//	fd-silent  serve, and write nothing there
//	chatty  write plain, JSON and invalid UTF-8 lines to stdout and stderr, then
//	        panic if it can create the file $PANIC_ONCE, else serve
//	exit1   exit 1 at once
//	exit1-slot1  exit 1 at once in slot 1, serve in the others
//	stubborn  notify READY=1 and ignore SIGTERM
//	watchdog  like serve, and send WATCHDOG=1 three times, 100ms apart, then never again
//
// GET /grow makes any serving worker allocate and touch 64 MiB.
//
//	stopping  notify READY=1, then STOPPING=1 on the first request and exit after it
//	stop-exit  notify READY=1, once the file $SERVING exists STOPPING=1 and at once exit 1
//	child-stopping  serve, and if it can create the file $STOP_ONCE, start
//	                a child that sends STOPPING=1 for it (and stays)
func testWorker(mode string) int {
	if mode == "notify-stopping" { // the child of child-stopping
		daemon.SdNotify(false, "STOPPING=1")
		time.Sleep(time.Hour)
		return 0
	}
	if mode == "chatty" {
		chatter()
	}
	if mode == "exit1" || mode == "exit1-slot1" && os.Getenv("BATON_WORKER") == "1" {
		fmt.Println("exit1 worker: failing on purpose")
		return 1
	}
	// Read before net.FileListener switches the shared socket to
	// non-blocking: baton must hand it over blocking, as systemd does.
	fl, _ := unix.FcntlInt(3, unix.F_GETFL, 0)
	blocking := fl&unix.O_NONBLOCK == 0
	var ln net.Listener
	var err error
	if mode == "handoff" {
		ln, err = handoff.Listener("http") // round-robin: no listener at 3
	} else {
		f := os.NewFile(3, "listener")
		ln, err = net.FileListener(f)
		f.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 3
	}
	stop := make(chan os.Signal, 1)
	if mode == "stubborn" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(stop, syscall.SIGTERM)
	}
	leave := make(chan struct{}, 1)
	var hog []byte
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/grow" {
			hog = make([]byte, 64<<20)
			// A byte per page makes it resident; every byte took seconds
			// under -race on a loaded machine, longer than the drain.
			for i := 0; i < len(hog); i += os.Getpagesize() {
				hog[i] = 1
			}
			fmt.Fprintf(w, "grown %d\n", len(hog))
			return
		}
		fmt.Fprintf(w, "pid %d listen_pid %s names %s fds %s slot %s blocking %v rev %s gen %s\n", os.Getpid(),
			os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDNAMES"), os.Getenv("LISTEN_FDS"), os.Getenv("BATON_WORKER"), blocking,
			os.Getenv("REV"), os.Getenv("BATON_GENERATION"))
		if mode == "stopping" {
			select {
			case leave <- struct{}{}:
			default:
			}
		}
	})}
	go srv.Serve(ln)
	fmt.Printf("worker %d serving\n", os.Getpid())
	switch mode {
	case "silent", "fd-silent":
	case "fd-ready":
		fd, _ := strconv.Atoi(os.Getenv(spawn.ReadyEnv))
		unix.Write(fd, []byte("\n"))
		unix.Close(fd)
	default:
		daemon.SdNotify(false, "READY=1")
	}
	if mode == "stop-exit" {
		// A worker of a generation still starting that leaves fails it:
		// wait until the test has seen the generation serving.
		for _, err := os.Stat(os.Getenv("SERVING")); err != nil; _, err = os.Stat(os.Getenv("SERVING")) {
			select {
			case <-stop:
				return 0
			case <-time.After(10 * time.Millisecond):
			}
		}
		daemon.SdNotify(false, "STOPPING=1")
		return 1
	}
	if f, err := os.OpenFile(os.Getenv("STOP_ONCE"), os.O_CREATE|os.O_EXCL, 0o600); mode == "child-stopping" && err == nil {
		f.Close()
		self, _ := os.Executable()
		child := exec.Command(self, "worker", "notify-stopping")
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			return 5
		}
	}
	if mode == "watchdog" {
		if os.Getenv("WATCHDOG_USEC") == "" {
			fmt.Println("watchdog worker: WATCHDOG_USEC is not set")
			return 4
		}
		go func() {
			for i := 0; i < 3; i++ {
				daemon.SdNotify(false, "WATCHDOG=1")
				fmt.Println("watchdog ping")
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	select {
	case <-stop:
	case <-leave:
		daemon.SdNotify(false, "STOPPING=1")
	}
	srv.Shutdown(context.Background())
	return 0
}

// get fetches one response on a new connection.
func get(t *testing.T, addr string) string {
	t.Helper()
	body, err := tryGet(addr)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// tryGet fetches one response on a new connection. The test workers drain
// naively (http.Server.Shutdown), so a connection a draining worker took
// can be closed unanswered: callers that sample during a reload retry.
func tryGet(addr string) (string, error) { return tryGetPath(addr, "/") }

func tryGetPath(addr, path string) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	resp := b.String()
	if i := strings.Index(resp, "\r\n\r\n"); i >= 0 {
		return resp[i+4:], nil
	}
	return "", fmt.Errorf("bad response from %s: %q", addr, resp)
}

// chatter writes every kind of line a worker may: plain text, a JSON
// object (one that tries to overwrite baton's keys, one with a tab
// between tokens), invalid UTF-8, an sd-daemon level prefix, on both
// streams; and then a panic, the first time, whose trace is many lines.
func chatter() {
	for _, w := range []*os.File{os.Stdout, os.Stderr} {
		fmt.Fprintln(w, "plain line")
		fmt.Fprintln(w, `{"level":"debug","msg":"from the worker","pid":1,"worker":"x","time":"never"}`)
		fmt.Fprintln(w, "{\t\"a\":\t[1, 2]}")
		fmt.Fprintln(w, `{"half":`)
		w.Write([]byte("bad \xff\xfe utf-8\n"))
		w.Write([]byte("{\"s\":\"\xff\"}\n"))
		fmt.Fprintln(w, "<3>an error")
		fmt.Fprintln(w, "")
	}
	if f, err := os.OpenFile(os.Getenv("PANIC_ONCE"), os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
		panic("chatty worker: crashing on purpose")
	}
}
