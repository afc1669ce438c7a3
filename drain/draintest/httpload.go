package draintest

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// HTTPLoad is clients sending GET requests one after another, each on
// its own http.Client (so its own connections; HTTP/2 ones too, which
// loadtest does not speak), until Stop. A request fails if it gets an
// error or an answer other than 200 with a body starting with the prefix
// given. Go's client retries by itself only what the protocol allows (a
// request an HTTP/2 server said with GOAWAY it did not process).
type HTTPLoad struct {
	OK, Failed atomic.Int64
	// NotHTTP2 counts the answers over HTTP/1.x.
	NotHTTP2 atomic.Int64

	first    atomic.Value
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// StartHTTPLoad starts n clients made by newClient against url.
func StartHTTPLoad(n int, newClient func() *http.Client, url, prefix string) *HTTPLoad {
	l := &HTTPLoad{stop: make(chan struct{})}
	for range n {
		client := newClient()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer client.CloseIdleConnections()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := l.get(client, url, prefix); err != nil {
					l.Failed.Add(1)
					l.first.CompareAndSwap(nil, err)
					continue
				}
				l.OK.Add(1)
			}
		}()
	}
	return l
}

func (l *HTTPLoad) get(client *http.Client, url, prefix string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.ProtoMajor != 2 {
		l.NotHTTP2.Add(1)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), prefix) {
		return fmt.Errorf("answer %d %q, want 200 starting %q", resp.StatusCode, body, prefix)
	}
	return nil
}

// WaitOK waits until n requests in all have been answered.
func (l *HTTPLoad) WaitOK(t testing.TB, n int64) {
	t.Helper()
	for deadline := time.Now().Add(EventTimeout); l.OK.Load() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests answered, want %d within %v", l.OK.Load(), n, EventTimeout)
		}
	}
}

// Stop ends the clients and waits for them; again, it does nothing.
func (l *HTTPLoad) Stop() {
	l.stopOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// FirstErr is the first failure, nil if none.
func (l *HTTPLoad) FirstErr() error {
	err, _ := l.first.Load().(error)
	return err
}
