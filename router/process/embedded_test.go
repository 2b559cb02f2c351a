package process

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/olio-dev/olio/descend"
)

// newEmbeddedRouter is a one-worker router whose app is h, in-process.
func newEmbeddedRouter(t testing.TB, h http.Handler, requestTimeout time.Duration) *Router {
	t.Helper()
	set, err := newSettings(&descend.Config{Key: "header:X-Olio-Key", Secret: "s3cr3t", RunDir: t.TempDir(),
		ForwardTimeout: time.Second, RequestTimeout: requestTimeout})
	if err != nil {
		t.Fatal(err)
	}
	r := newRouter(0, set, slog.New(slog.DiscardHandler))
	r.members.Store(&membership{epoch: 1, workers: 1})
	r.handler = h
	t.Cleanup(func() { r.pool.Close() })
	return r
}

// A panic in the handler answers 500 to that request, counts it, and the router goes on
// serving; the secret headers never reach the handler.
func TestEmbeddedHandlerPanic(t *testing.T) {
	var seen http.Header
	r := newEmbeddedRouter(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		seen = req.Header.Clone()
		if req.URL.Path == "/panic" {
			panic("boom")
		}
		io.WriteString(w, "ok")
	}), 0)
	srv := httptest.NewServer(r)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/panic")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(string(body), "boom") {
		t.Errorf("panicking handler: %d %q; want 500 without the panic's text", resp.StatusCode, body)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/fine", nil)
	req.Header.Set(HeaderIndex, "0")
	req.Header.Set(HeaderSecret, "s3cr3t")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Errorf("after a panic: %d %q, want 200 ok", resp.StatusCode, body)
	}
	if _, ok := seen[HeaderSecret]; ok {
		t.Errorf("the handler saw %s", HeaderSecret)
	}
	if n := r.counters.served.Load(); n != 2 {
		t.Errorf("served %d, want 2", n)
	}
	if n := r.counters.inFlight.Load(); n != 0 {
		t.Errorf("in flight %d after both answers, want 0", n)
	}
}

// A panic after the answer began cannot become a 500: the connection is cut, as net/http
// does, and the client sees a broken answer rather than a wrong one.
func TestEmbeddedHandlerPanicMidAnswer(t *testing.T) {
	r := newEmbeddedRouter(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "partial")
		panic("boom")
	}), 0)
	srv := httptest.NewServer(r)
	defer srv.Close()
	srv.Config.ErrorLog = nil
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		return // cut before the header arrived: also a broken answer
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Errorf("answer read to its end after a panic mid-answer, want an error")
	}
}

// --request-timeout: a handler that has not begun its answer by then has its context
// cancelled and the client gets 504; one that has begun streams on.
func TestEmbeddedRequestTimeout(t *testing.T) {
	r := newEmbeddedRouter(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/stream" {
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			time.Sleep(150 * time.Millisecond) // the handler's own work, past the timeout
			io.WriteString(w, "done")
			return
		}
		select {
		case <-req.Context().Done():
		case <-time.After(60 * time.Second): // bounded, so that a failing test ends
		}
	}), 50*time.Millisecond)
	srv := httptest.NewServer(r)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("handler that never answers: %d, want 504", resp.StatusCode)
	}
	resp, err = http.Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "done" {
		t.Errorf("streaming handler: %d %q, want 200 done", resp.StatusCode, body)
	}
}

// The guard keeps what handlers rely on: Hijack (WebSocket) and Flush through the wrapper.
func TestEmbeddedWriterHijack(t *testing.T) {
	r := newEmbeddedRouter(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		brw.Flush()
	}), 0)
	srv := httptest.NewServer(r)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(bufio.NewReader(resp.Body))
	resp.Body.Close()
	if string(body) != "hijacked" {
		t.Errorf("hijacked answer %q", body)
	}
}

// Workers and OLIO_WORKERS follow the membership the master sends.
func TestWorkersFollowsMembership(t *testing.T) {
	r := newEmbeddedRouter(t, http.NotFoundHandler(), 0)
	master, child, err := descend.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	ctl, err := descend.FileConn(child)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	r.ctl = ctl
	t.Setenv("OLIO_WORKERS", "1")
	go func() {
		for { // the acknowledgements
			if _, err := master.Recv(); err != nil {
				return
			}
		}
	}()
	for i, n := range []int{5, 2} {
		if err := r.onMembership(&descend.Membership{Epoch: uint64(10 + i), Workers: n}); err != nil {
			t.Fatal(err)
		}
		if EmbeddedWorkers() != n || os.Getenv("OLIO_WORKERS") != strconv.Itoa(n) {
			t.Errorf("after a membership of %d: EmbeddedWorkers() = %d, OLIO_WORKERS=%s", n, EmbeddedWorkers(), os.Getenv("OLIO_WORKERS"))
		}
	}
}

// A standalone embedded service listens at Server.Addr, else $OLIO_LISTEN, else
// 127.0.0.1:$PORT (8080 without it); a bad value is refused with what to write instead.
func TestStandaloneAddr(t *testing.T) {
	for _, tc := range []struct {
		addr, listen, port, want, err string
	}{
		{"", "", "", "127.0.0.1:8080", ""},
		{"", "", "9000", "127.0.0.1:9000", ""},
		{"", "0.0.0.0:7000", "9000", "0.0.0.0:7000", ""},
		{"127.0.0.2:6000", "0.0.0.0:7000", "9000", "127.0.0.2:6000", ""},
		{"", "7000", "", "", "OLIO_LISTEN=\"7000\": want host:port"},
		{"", "", "http", "", "PORT=\"http\": want a port number"},
	} {
		got, err := standaloneAddr(tc.addr, tc.listen, tc.port)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("standaloneAddr(%q, %q, %q): error %v, want one saying %q", tc.addr, tc.listen, tc.port, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("standaloneAddr(%q, %q, %q) = %q, %v; want %q", tc.addr, tc.listen, tc.port, got, err, tc.want)
		}
	}
}
