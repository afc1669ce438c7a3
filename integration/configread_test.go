package integration

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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
