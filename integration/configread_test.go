package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/supervisor"
)

// What a configuration read may meet at the config path, and what baton
// must say of it.
var notAConfig = []struct {
	name string
	make func(t *testing.T, path string) // puts it at path
	want string                          // in the one-line refusal
}{
	{"fifo", func(t *testing.T, path string) {
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
	}, "not a regular file"},
	{"dev-zero", func(t *testing.T, path string) {
		if err := os.Symlink("/dev/zero", path); err != nil {
			t.Fatal(err)
		}
	}, "not a regular file"},
	{"100MB", func(t *testing.T, path string) {
		f, err := os.Create(path)
		if err == nil {
			err = f.Truncate(100 << 20) // sparse: costs the disk nothing
			f.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
	}, "more than the 1 MiB"},
}

// placeAt puts what mk makes at path in place of what is there, in one
// rename (as a config manager would), and arranges that a reader stuck on
// a FIFO there is let go before the processes are stopped.
func placeAt(t *testing.T, path string, mk func(*testing.T, string)) {
	t.Helper()
	tmp := path + ".new"
	mk(t, tmp)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A writer that opens and closes lets a blocked open(2) of the
		// FIFO return, and its read end at EOF.
		if fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			syscall.Close(fd)
		}
	})
}

// memoryGuard samples a process's resident memory and SIGKILLs it once
// above limitKB, so that a test of a memory blow-up cannot take the
// machine with it.
type memoryGuard struct {
	*rssMax
	killed chan struct{} // closed if it had to kill
}

func guardMemory(t *testing.T, pid, limitKB int) *memoryGuard {
	g := &memoryGuard{rssMax: sampleRSS(pid), killed: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if rssKB(pid) > limitKB {
				syscall.Kill(pid, syscall.SIGKILL)
				close(g.killed)
				return
			}
		}
	}()
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(done) }) })
	return g
}

// `baton check --config X` and `baton status --config X` refuse a FIFO,
// /dev/zero and a 100 MB file at once with one line, without blocking or
// growing.
func TestConfigCommandsRefuseWhatIsNoConfig(t *testing.T) {
	exe := batonPlain(t)
	for _, nc := range notAConfig {
		for _, cmd := range []string{"check", "status"} {
			t.Run(cmd+"/"+nc.name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "baton.toml")
				placeAt(t, path, nc.make)
				p := start(t, nil, exe, cmd, "--config", path)
				mem := guardMemory(t, p.cmd.Process.Pid, 100<<10)
				code := p.waitExit(10 * time.Second)
				<-p.out.done
				peak := mem.end()
				out := strings.TrimSpace(p.out.String())
				t.Logf("baton %s --config (%s): exit %d, at most %d kB resident: %s", cmd, nc.name, code, peak, out)
				select {
				case <-mem.killed:
					t.Fatalf("baton %s --config (%s) went past 100 MB resident and was killed", cmd, nc.name)
				default:
				}
				if code != 2 || strings.Contains(out, "\n") || !strings.Contains(out, nc.want) || !strings.Contains(out, path) {
					t.Errorf("baton %s --config (%s): exit %d, %q; want exit 2 and one line naming the file and saying %q", cmd, nc.name, code, out, nc.want)
				}
			})
		}
	}
}

// A reload that finds a FIFO, /dev/zero or a 100 MB file at the config
// path fails with one line, while the event loop keeps answering status
// and replaces a killed worker, and baton does not grow.
func TestReloadOfNoConfigKeepsServing(t *testing.T) {
	exe := batonPlain(t)
	for _, nc := range notAConfig {
		t.Run(nc.name, func(t *testing.T) {
			b := startConfigBatonOf(t, exe, hellos(1, ""))
			mem := guardMemory(t, b.cmd.Process.Pid, 200<<10)
			placeAt(t, b.cfgPath, nc.make)

			// A client polls status all along; each answer's latency is
			// kept.
			var (
				mu        sync.Mutex
				latencies []time.Duration
				failures  []error
			)
			stop := make(chan struct{})
			polled := make(chan struct{})
			go func() {
				defer close(polled)
				for {
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					begin := time.Now()
					resp, err := supervisor.Request(ctx, b.control, supervisor.ControlRequest{Command: "status"})
					took := time.Since(begin)
					cancel()
					if err == nil && resp.Status == nil {
						err = fmt.Errorf("no status in %+v", resp)
					}
					mu.Lock()
					latencies = append(latencies, took)
					if err != nil {
						failures = append(failures, err)
					}
					mu.Unlock()
				}
			}()
			var stopOnce sync.Once
			endPoll := func() { stopOnce.Do(func() { close(stop); <-polled }) }
			t.Cleanup(endPoll)

			from := b.out.len()
			answer := make(chan supervisor.ControlResponse, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				resp, err := supervisor.Request(ctx, b.control, supervisor.ControlRequest{Command: "reload"})
				if err != nil && resp.Error == "" {
					resp.Error = "no answer: " + err.Error()
				}
				answer <- resp
			}()
			// The reload is under way (or done): a worker killed now is
			// replaced all the same.
			b.out.waitFrom(from, regexp.MustCompile(`msg=reloading`), 10*time.Second)
			victim := b.workerPIDs()[0]
			syscall.Kill(victim, syscall.SIGKILL)
			_, next := b.out.waitFrom(from, regexp.MustCompile(fmt.Sprintf(`msg="worker exited[^"]*" slot=\d+ pid=%d `, victim)), 10*time.Second)
			line, _ := b.out.waitFrom(next, reWorkerReady, 10*time.Second)
			t.Logf("worker %d killed during the reload; replaced: %s", victim, line)

			var resp supervisor.ControlResponse
			select {
			case resp = <-answer:
			case <-time.After(25 * time.Second):
				t.Fatal("no answer to the reload")
			}
			endPoll()
			peak := mem.end()
			mu.Lock()
			defer mu.Unlock()
			var worst time.Duration
			for _, d := range latencies {
				worst = max(worst, d)
			}
			t.Logf("reload (%s): %q; %d status answers, the slowest in %s; baton at most %d kB resident", nc.name, resp.Error, len(latencies), worst.Round(time.Millisecond), peak)
			select {
			case <-mem.killed:
				t.Fatalf("baton went past 200 MB resident and was killed")
			default:
			}
			if resp.OK || !strings.Contains(resp.Error, nc.want) || strings.Contains(resp.Error, "\n") {
				t.Errorf("reload answer %+v; want a failure of one line saying %q", resp, nc.want)
			}
			if len(failures) > 0 {
				t.Errorf("%d of %d status requests failed, the first: %v", len(failures), len(latencies), failures[0])
			}
			// 100 ms is the target; the bound leaves room for a loaded
			// machine while catching a loop that waits on the read.
			if worst > 500*time.Millisecond {
				t.Errorf("a status answer took %s during the reload; want each within 500ms", worst)
			}
			if peak > 50<<10 {
				t.Errorf("baton reached %d kB resident; want below 50 MB", peak)
			}
		})
	}
}
