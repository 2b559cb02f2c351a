package appleg

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingApp is an app that counts the connections it is sent on.
func countingApp(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	app := httptest.NewUnstartedServer(h)
	app.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	app.Start()
	t.Cleanup(app.Close)
	return app, &conns
}

// An answer without a body by rule (204, 304, the answer to a HEAD) leaves its connection
// fit for the next request: five in a row go on one connection.
func TestEngineReusesAfterAnswersWithoutBody(t *testing.T) {
	for _, c := range []struct {
		method string
		code   int
	}{{"GET", http.StatusNoContent}, {"GET", http.StatusNotModified}, {"HEAD", http.StatusOK}} {
		app, conns := countingApp(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(c.code) })
		front := fastFrontOf(t, app, true)
		for range 5 {
			req, _ := http.NewRequest(c.method, front.URL, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.code {
				t.Fatalf("%s %d: got %d", c.method, c.code, resp.StatusCode)
			}
		}
		if n := conns.Load(); n != 1 {
			t.Errorf("%s answered %d: 5 requests in a row took %d connections to the app, want 1", c.method, c.code, n)
		}
	}
}

// Small POSTs in a row reuse their connection: the body's writer has ended by the time the
// answer has (or soon after), as with http.Transport.
func TestEngineReusesAfterPost(t *testing.T) {
	app, conns := countingApp(t, func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		io.WriteString(w, "ok")
	})
	front := fastFrontOf(t, app, true)
	const n = 50
	for range n {
		resp, err := http.Post(front.URL, "text/plain", strings.NewReader(strings.Repeat("x", 100)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if got := conns.Load(); got > n/5 {
		t.Errorf("%d POSTs in a row took %d connections to the app, want nearly one", n, got)
	}
}

// The request's head reaches the app before its body does: an app sees an upload that has
// not begun (and can refuse it on its head), as with http.Transport.
func TestEngineSendsHeadBeforeBody(t *testing.T) {
	got := make(chan struct{}, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		got <- struct{}{}
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(app.Close)
	front := fastFrontOf(t, app, true)
	for _, head := range []string{
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
	} {
		c, err := net.Dial("tcp", strings.TrimPrefix(front.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(c, head) // and no more of the body
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Errorf("the app had not seen the request within 10s of its head (%q): the head waited for the body", head)
		}
		c.Close()
	}
}
