package integration

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batonhq/baton/internal/control"
	"github.com/batonhq/baton/loadtest"
)

// The lame-duck stop (stop.delay), as an orchestrator meets it: the
// load balancer goes on sending new connections for a while after it
// told the pod to stop. With stop.delay = "3s", SIGTERM while a client
// opens a new connection every 50 ms for 2.5 s and keep-alive clients
// keep sending: none is refused, none fails; /readyz is 503 from the
// stop on while /livez stays 200; a reload is refused; then baton drains
// and exits 0 within delay + drain_timeout. With no delay the same load
// is refused from the stop on: the count is logged, not asserted (it
// depends on how fast the workers drain).
func TestStopDelayServesThroughLameDuck(t *testing.T) {
	const (
		window = 2500 * time.Millisecond // the load after SIGTERM
		every  = 50 * time.Millisecond   // one new connection each
		drain  = 5 * time.Second
	)
	for _, delay := range []time.Duration{3 * time.Second, 0} {
		t.Run("delay="+delay.String(), func(t *testing.T) {
			metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			base := "http://" + metrics
			socket := filepath.Join(t.TempDir(), "ctl.sock")
			args := []string{"--workers", "2", "--drain-timeout", drain.String(), "--metrics", metrics, "--control", socket}
			if delay > 0 {
				args = append(args, "--stop-delay", delay.String())
			}
			b := startBaton(t, append(args, "--", bin.hello)...)
			// baton logs its readiness a moment before /readyz has it.
			code, body := httpGet(base + "/readyz")
			for deadline := time.Now().Add(5 * time.Second); code != 200 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				code, body = httpGet(base + "/readyz")
			}
			if code != 200 {
				t.Fatalf("/readyz while serving: %d %s", code, body)
			}
			g := startLoad(t, b.addr, loadtest.KeepAlive, 8)

			start := time.Now()
			syscall.Kill(b.cmd.Process.Pid, syscall.SIGTERM)
			exitedAfter := make(chan time.Duration, 1)
			go func() {
				<-b.exited
				exitedAfter <- time.Since(start)
			}()
			var (
				wg                  sync.WaitGroup
				ok, refused, failed atomic.Int64
				samplesMu           sync.Mutex
				samples             []string
				probes              probeLog
			)
			// A new connection every 50 ms, each in its own goroutine so
			// that a slow answer does not delay the next.
			tick := time.NewTicker(every)
			wg.Add(1)
			go func() {
				defer wg.Done()
				probes.watch(base, start, window)
			}()
			// What an operator sees and may do meanwhile.
			var status, reload control.Response
			if delay > 0 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Once /readyz says so, baton has taken the stop.
					for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
						if code, _ := httpGet(base + "/readyz"); code == 503 {
							break
						}
					}
					status = requestNow(socket, "status")
					reload = requestNow(socket, "reload")
				}()
			}
			for time.Since(start) < window {
				wg.Add(1)
				go func() {
					defer wg.Done()
					body, err := getOnce(b.addr, "/")
					switch {
					case err == nil && strings.HasPrefix(body, "hello from pid"):
						ok.Add(1)
						return
					case errors.Is(err, syscall.ECONNREFUSED):
						refused.Add(1)
					default:
						failed.Add(1)
					}
					samplesMu.Lock()
					if len(samples) < 5 {
						samples = append(samples, fmt.Sprintf("%s: %v %q", time.Since(start).Round(time.Millisecond), err, body))
					}
					samplesMu.Unlock()
				}()
				<-tick.C
			}
			tick.Stop()
			r := g.Stop()
			wg.Wait()
			attempts := ok.Load() + refused.Load() + failed.Load()
			t.Logf("new connections after SIGTERM (one every %s for %s): %d ok, %d refused, %d failed otherwise %v",
				every, window, ok.Load(), refused.Load(), failed.Load(), samples)
			t.Logf("keep-alive load across the stop: %s", r)
			code = b.waitExit(delay + drain + 20*time.Second)
			took := <-exitedAfter
			t.Logf("baton exited %d, %s after SIGTERM", code, took.Round(time.Millisecond))
			if code != 0 {
				t.Errorf("baton exited %d after SIGTERM, want 0", code)
			}
			if delay == 0 {
				return // the refusals above are what stop.delay is for
			}

			if refused.Load() != 0 || failed.Load() != 0 || attempts < int64(window/every)/2 {
				t.Errorf("new connections during the lame duck: %d of %d ok, %d refused, %d failed: %v",
					ok.Load(), attempts, refused.Load(), failed.Load(), samples)
			}
			if r.Failed() != 0 || r.OK == 0 {
				t.Errorf("keep-alive load during the lame duck: %s %v", r, r.Samples)
			}
			probes.check(t, time.Second)
			if reload.OK || !strings.Contains(reload.Error, "a lame duck for") || !strings.Contains(reload.Error, "(stop.delay)") {
				t.Errorf("reload during the lame duck: %+v, want it refused naming stop.delay", reload)
			}
			if st := status.Status; st == nil || st.Phase != "lame duck" || st.Ready || !(st.StopIn > 0 && st.StopIn <= delay.Seconds()) {
				t.Errorf("status during the lame duck: %+v, want phase %q, not ready, stop_in_seconds in (0, %v]", st, "lame duck", delay.Seconds())
			}
			// baton starts its delay after the signal reaches it, so it
			// cannot be gone before; a drain of idle workers is quick,
			// but a loaded machine may make it slow: the bound is about
			// a stall, not speed.
			if took < delay || took > delay+drain+5*time.Second {
				t.Errorf("baton exited %s after SIGTERM, want between stop.delay %s and stop.delay + drain_timeout (+5s)", took.Round(time.Millisecond), delay)
			}
		})
	}
}

// A stop on the control socket honours stop.delay and waits; baton stop
// --now during the delay drains at once, and both are answered once
// baton is done.
func TestStopDelayBatonStopNow(t *testing.T) {
	const delay = time.Minute
	socket := filepath.Join(t.TempDir(), "ctl.sock")
	b := startBaton(t, "--workers", "2", "--stop-delay", delay.String(), "--control", socket, "--", bin.hello)
	start := time.Now()
	first := make(chan control.Response, 1)
	go func() { first <- requestNow(socket, "stop") }()
	b.out.wait(regexp.MustCompile(`msg="lame duck: serving, not ready, until the drain"`), 30*time.Second)
	if code, out := ctl(t, "stop", "--now", "--control", socket); code != 0 || !strings.Contains(out, "stop ok") {
		t.Errorf("baton stop --now during the lame duck: exit %d: %s", code, out)
	}
	if r := <-first; !r.OK {
		t.Errorf("stop: %+v", r)
	}
	if code := b.waitExit(30 * time.Second); code != 0 {
		t.Errorf("baton exited %d, want 0", code)
	}
	if took := time.Since(start); took > delay/2 {
		t.Errorf("baton stopped %s after baton stop, --now did not skip stop.delay %s", took.Round(time.Millisecond), delay)
	}
}

// probeLog is what /readyz and /livez answered after a stop.
type probeLog struct {
	first503  time.Duration // since the stop; 0 if never
	readyLate []string      // /readyz 200 after its first 503
	liveBad   []string      // /livez other than 200
}

// watch asks both probes every 50 ms until window has passed since start.
func (p *probeLog) watch(base string, start time.Time, window time.Duration) {
	for time.Since(start) < window {
		at := time.Since(start)
		code, body := httpGet(base + "/readyz")
		switch {
		case code == 503 && p.first503 == 0:
			p.first503 = max(at, time.Nanosecond)
		case code != 503 && p.first503 != 0:
			p.readyLate = append(p.readyLate, fmt.Sprintf("%s: %d %s", at.Round(time.Millisecond), code, body))
		}
		if code, body := httpGet(base + "/livez"); code != 200 {
			p.liveBad = append(p.liveBad, fmt.Sprintf("%s: %d %s", at.Round(time.Millisecond), code, body))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// check: /readyz said 503 within soon of the stop and kept saying it, and
// /livez said 200 throughout.
func (p *probeLog) check(t *testing.T, soon time.Duration) {
	t.Helper()
	if p.first503 == 0 || p.first503 > soon {
		t.Errorf("/readyz first answered 503 %s after SIGTERM, want within %s", p.first503, soon)
	}
	if len(p.readyLate) > 0 {
		t.Errorf("/readyz answered other than 503 after its first 503: %v", p.readyLate)
	}
	if len(p.liveBad) > 0 {
		t.Errorf("/livez during the lame duck: %v, want 200", p.liveBad)
	}
}

// requestNow sends command to the control socket; an error is the
// answer's.
func requestNow(socket, command string) control.Response {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := control.Ask(ctx, socket, control.Request{Command: command})
	if err != nil {
		r.Error = err.Error()
	}
	return r
}
