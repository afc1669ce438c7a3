package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/control"
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
	}, "more than the 256 KiB"},
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
					resp, err := control.Ask(ctx, b.control, control.Request{Command: "status"})
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
			answer := make(chan control.Response, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				resp, err := control.Ask(ctx, b.control, control.Request{Command: "reload"})
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

			var resp control.Response
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

// notifyListener is a stand-in for systemd's notify socket: the
// datagrams baton sends to it, in order.
type notifyListener struct {
	path string
	msgs chan string
}

func listenNotify(t *testing.T) *notifyListener {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	// Room for a datagram as large as the kernel lets baton send.
	conn.SetReadBuffer(4 << 20)
	n := &notifyListener{path: path, msgs: make(chan string, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<20)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return // closed
			}
			select {
			case n.msgs <- string(buf[:k]):
			default: // a test that stopped reading
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return n
}

// wait returns the next datagram containing field (such as "READY=1"),
// skipping others, within d.
func (n *notifyListener) wait(t *testing.T, field string, d time.Duration) string {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-n.msgs:
			for _, l := range strings.Split(m, "\n") {
				if l == field {
					return m
				}
			}
		case <-deadline:
			t.Fatalf("no %s on the notify socket within %s", field, d)
		}
	}
}

// A configuration with a huge key quotes a short prefix of it: the reload
// answer, `last_reload.error` and every status stay small, and systemd
// hears READY=1 after RELOADING=1 (a STATUS= as large as the key would
// not fit a datagram). baton stays under 20 MB resident through the
// reload and status calls of a 250 KiB key (about the largest a file may
// hold, and more than a datagram takes) and of a 10 MB key (refused by
// size).
func TestLongValuesAreNotEchoed(t *testing.T) {
	exe := batonPlain(t)
	notify := listenNotify(t)
	dir := t.TempDir()
	b := &configBaton{cfgPath: filepath.Join(dir, "baton.toml"), control: filepath.Join(dir, "baton.sock")}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	good := batonConfig(addr, 1, nil, "")
	b.write(t, good)
	p := start(t, []string{"NOTIFY_SOCKET=" + notify.path}, exe, "run", "--config", b.cfgPath, "--control", b.control)
	b.baton = &baton{proc: p, addr: addr}
	p.out.wait(reAllReady, 30*time.Second)
	notify.wait(t, "READY=1", 10*time.Second)
	pid := p.cmd.Process.Pid
	// What the start left resident is given back by baton's first trim.
	for deadline := time.Now().Add(10 * time.Second); stats(t, b.control).Trimmed.IsZero(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("baton did not trim its memory within 10s of starting")
		}
	}
	t.Logf("baton %d kB resident before the reloads", rssKB(pid))

	for _, step := range []struct{ size, peakKB int }{{250 << 10, 20 << 10}, {10 << 20, 20 << 10}} {
		// Resident memory left by the step before is given back first.
		for deadline := time.Now().Add(10 * time.Second); rssKB(pid) >= 20<<10; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("baton still %d kB resident 10s after a reload, want below 20 MB", rssKB(pid))
			}
		}
		rss := sampleRSS(pid)
		key := strings.Repeat("k", step.size)
		b.write(t, good+"\n"+key+" = 1\n")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		resp, err := control.Ask(ctx, b.control, control.Request{Command: "reload"})
		cancel()
		if err != nil && resp.Error == "" {
			t.Fatalf("reload with a %d-byte key: no answer: %v", step.size, err)
		}
		t.Logf("reload with a %d-byte key: %d-byte answer: %.200s", step.size, len(resp.Error), resp.Error)
		if resp.OK || len(resp.Error) > 512 || strings.Contains(resp.Error, strings.Repeat("k", 100)) {
			t.Errorf("reload with a %d-byte key answered %d bytes (ok %v); want a failure quoting at most a short prefix of the key", step.size, len(resp.Error), resp.OK)
		}
		notify.wait(t, "RELOADING=1", 10*time.Second)
		ready := notify.wait(t, "READY=1", 10*time.Second)
		if len(ready) > 4096 {
			t.Errorf("READY=1 came in a datagram of %d bytes; want STATUS= kept short", len(ready))
		}
		for range 10 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			st, err := control.Ask(ctx, b.control, control.Request{Command: "status"})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			j, _ := json.Marshal(st)
			if len(j) > 8192 || st.Status.LastReload == nil || st.Status.LastReload.OK {
				t.Fatalf("status after a reload with a %d-byte key: %d bytes of JSON, last reload %+v; want a failed reload in a few kB", step.size, len(j), st.Status.LastReload)
			}
		}
		peak := rss.end()
		t.Logf("a %d-byte key: baton at most %d kB resident through the reload and 10 status calls", step.size, peak)
		if peak >= step.peakKB {
			t.Errorf("a %d-byte key: baton reached %d kB resident; want below %d kB", step.size, peak, step.peakKB)
		}
	}
}

// `baton check` refuses what exec would refuse: an argument or an
// environment variable longer than the kernel takes (MAX_ARG_STRLEN),
// naming the key and the limit; `baton run` refuses it before starting.
func TestCheckRefusesWhatExecRefuses(t *testing.T) {
	long := strings.Repeat("x", 200<<10)
	for _, tt := range []struct {
		name, extra, want string
	}{
		{"argument", "", "worker.command[1]"},
		{"env", "env = { BIG = \"" + long + "\" }", "worker.env.BIG"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			command := []string{bin.hello}
			if tt.name == "argument" {
				command = append(command, long)
			}
			path := filepath.Join(t.TempDir(), "baton.toml")
			cfg := batonConfig(fmt.Sprintf("127.0.0.1:%d", freePort(t)), 1, command, tt.extra)
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range [][]string{{"check", "--config", path}, {"run", "--config", path}} {
				p := start(t, nil, append([]string{bin.baton}, cmd...)...)
				code := p.waitExit(30 * time.Second)
				<-p.out.done
				out := strings.TrimSpace(p.out.String())
				t.Logf("baton %s: exit %d: %.300s", cmd[0], code, out)
				if code != 2 || strings.Contains(out, "\n") || !strings.Contains(out, tt.want) || !strings.Contains(out, "131072") || len(out) > 512 {
					t.Errorf("baton %s: exit %d, %d bytes: %.300q; want exit 2 and one short line naming %s and the limit 131072", cmd[0], code, len(out), out, tt.want)
				}
			}
		})
	}
}
