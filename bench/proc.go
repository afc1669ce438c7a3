package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a process the bench started, in its own process group, its
// output kept (and copied to a log file) so the bench can wait for a line.
type proc struct {
	name string
	cmd  *exec.Cmd

	mu    sync.Mutex
	lines []string
	grew  chan struct{} // closed and replaced whenever a line arrives
	done  chan struct{} // closed once its output has ended
}

// started are every process the bench started, ended by stopAll.
var (
	startedMu sync.Mutex
	started   []*proc
)

// start runs argv with env added, output to logDir/name.log.
func start(logDir, name string, env []string, argv ...string) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	log, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, grew: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer log.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(log, line)
			p.mu.Lock()
			p.lines = append(p.lines, line)
			close(p.grew)
			p.grew = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() {
		cmd.Wait()
		w.Close()
	}()
	startedMu.Lock()
	started = append(started, p)
	startedMu.Unlock()
	return p, nil
}

// wait waits for a line matching re, from line from on; it returns the
// line and the index after it.
func (p *proc) wait(re *regexp.Regexp, from int, d time.Duration) (string, int, error) {
	deadline := time.After(d)
	for {
		p.mu.Lock()
		for i := from; i < len(p.lines); i++ {
			if re.MatchString(p.lines[i]) {
				line := p.lines[i]
				p.mu.Unlock()
				return line, i + 1, nil
			}
		}
		from = len(p.lines)
		grew := p.grew
		p.mu.Unlock()
		select {
		case <-grew:
		case <-p.done:
			return "", from, fmt.Errorf("%s ended before a line matching %q", p.name, re)
		case <-deadline:
			return "", from, fmt.Errorf("%s: no line matching %q within %v", p.name, re, d)
		}
	}
}

// len is how many lines it wrote so far.
func (p *proc) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// stop ends p's process group: SIGTERM, then SIGKILL after d.
func (p *proc) stop(d time.Duration) {
	pgid := p.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(d):
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.done
}

// stopAll ends every process still running.
func stopAll() {
	startedMu.Lock()
	ps := started
	started = nil
	startedMu.Unlock()
	for _, p := range ps {
		p.stop(10 * time.Second)
	}
}

// run runs argv to its end and returns its output.
func run(env []string, argv ...string) (string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// freeAddr returns a loopback address no one listens on now.
func freeAddr() (string, error) {
	addrs, err := freeAddrs(1)
	if err != nil {
		return "", err
	}
	return addrs[0], nil
}

// freeAddrs returns n distinct loopback addresses no one listens on now.
func freeAddrs(n int) ([]string, error) {
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// rssMB returns pid's resident memory in MB (MiB), 0 if unknown.
func rssMB(pid int) float64 { return statusMB(pid, "VmRSS:") }

// statusMB reads the field of /proc/pid/status (in kB) in MB.
func statusMB(pid int, field string) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return float64(kb) / 1024
		}
	}
	return 0
}

// children lists pid's children.
func children(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 1 && f[1] == strconv.Itoa(pid) {
				out = append(out, c)
			}
		}
	}
	return out
}

// waitServing waits until addr answers HTTP.
func waitServing(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			b, _ := io.ReadAll(c)
			c.Close()
			if strings.HasPrefix(string(b), "HTTP/1.1 200") {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not serve after %v", addr, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
