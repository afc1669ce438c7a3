package loadtest

import (
	"fmt"
	"io"
	"net"
	"net/http"
)

// http2Client is one HTTP/2 client (TLS or h2c) on net/http's own
// client, with HTTP/1 turned off. In KeepAlive mode it keeps one
// connection; in PerRequest mode each request gets a connection of its
// own. The client retries on its own only what HTTP/2 says was not
// processed: a request above a GOAWAY's last stream, or one refused with
// REFUSED_STREAM.
type http2Client struct {
	url string
	c   *http.Client
	tr  *http.Transport
}

func newHTTP2Client(o Options) *http2Client {
	var p http.Protocols
	scheme := "https"
	if o.Protocol == H2C {
		p.SetUnencryptedHTTP2(true)
		scheme = "http"
	} else {
		p.SetHTTP2(true)
	}
	d := &net.Dialer{ControlContext: loopbackOnly}
	tr := &http.Transport{
		DialContext:       d.DialContext,
		TLSClientConfig:   o.TLS.Clone(),
		Protocols:         &p,
		DisableKeepAlives: o.Mode == PerRequest,
		ForceAttemptHTTP2: true,
	}
	return &http2Client{
		url: scheme + "://" + o.Addr + o.Path,
		c:   &http.Client{Transport: tr, Timeout: o.Timeout},
		tr:  tr,
	}
}

func (c *http2Client) do() (string, error) {
	resp, err := c.c.Get(c.url)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", fmt.Errorf("load: read body (status %q): %w", resp.Status, err)
	}
	if resp.ProtoMajor != 2 {
		return "", fmt.Errorf("load: answered over %s, not HTTP/2", resp.Proto)
	}
	if resp.StatusCode != http.StatusOK {
		return "", &statusError{resp.Status}
	}
	return resp.Header.Get("X-Pid"), nil
}

func (c *http2Client) close() { c.tr.CloseIdleConnections() }
