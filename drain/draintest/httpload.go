package draintest

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
)

// HTTPLoad is clients sending GET requests one after another, each on
// its own http.Client (so its own connections; HTTP/2 ones too, which
// loadtest does not speak), until Stop. A request fails if it gets an
// error or an answer other than 200 with a body starting with the prefix
// given. Go's client retries by itself only what the protocol allows (a
// request an HTTP/2 server said with GOAWAY it did not process).
type HTTPLoad struct {
	clients
	// NotHTTP2 counts the answers over HTTP/1.x.
	NotHTTP2 atomic.Int64
}

// StartHTTPLoad starts n clients made by newClient against url.
func StartHTTPLoad(n int, newClient func() *http.Client, url, prefix string) *HTTPLoad {
	l := &HTTPLoad{clients: newClients()}
	l.run(n, func(int) {
		client := newClient()
		defer client.CloseIdleConnections()
		for !l.stopped() {
			if err := l.get(client, url, prefix); err != nil {
				l.fail(err)
				continue
			}
			l.OK.Add(1)
		}
	})
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
