package appleg

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// appServer is an httptest app that counts the connections it accepted.
func appServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32, *App) {
	t.Helper()
	var conns atomic.Int32
	ts := httptest.NewUnstartedServer(h)
	ts.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	port, _ := strconv.Atoi(ts.URL[strings.LastIndexByte(ts.URL, ':')+1:])
	tr := New(port)
	t.Cleanup(func() { tr.CloseIdleConnections(); ts.Close() })
	return ts, &conns, tr
}

func get(t *testing.T, tr http.RoundTripper, ctx context.Context, method, body string) (*http.Response, string, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(ctx, method, "http://app/x", rd)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), nil
}

func TestAppTransportReusesConnections(t *testing.T) {
	_, conns, tr := appServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi "+r.Method) })
	for i := 0; i < 20; i++ {
		_, body, err := get(t, tr, context.Background(), "GET", "")
		if err != nil || body != "hi GET" {
			t.Fatalf("request %d: %q, %v", i, body, err)
		}
	}
	if g := conns.Load(); g != 1 {
		t.Errorf("20 sequential requests used %d connections, want 1", g)
	}
}

func TestAppTransportRoundTripBody(t *testing.T) {
	_, _, tr := appServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, strconv.Itoa(len(b)))
	})
	if _, body, err := get(t, tr, context.Background(), "POST", strings.Repeat("x", 100000)); err != nil || body != "100000" {
		t.Errorf("POST: %q, %v", body, err)
	}
}

// A pooled connection the app closed while idle is replaced without failing the request.
func TestAppTransportRetriesStaleConnection(t *testing.T) {
	ts, conns, tr := appServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	if _, _, err := get(t, tr, context.Background(), "GET", ""); err != nil {
		t.Fatal(err)
	}
	ts.CloseClientConnections() // the app drops its idle keep-alive connections
	if _, body, err := get(t, tr, context.Background(), "GET", ""); err != nil || body != "ok" {
		t.Errorf("after the app closed the idle connection: %q, %v", body, err)
	}
	if g := conns.Load(); g != 2 {
		t.Errorf("%d connections, want 2", g)
	}
}

// An app that dies while it holds a request on a pooled connection: the transport tries
// once more on a new connection, which fails to connect. For an idempotent request that is
// a DialError, so the router repeats it on the replacement app; for any other it is not,
// since the dead app may have acted on it, and the client gets 502 (README: "the requests
// it was serving get a clear 502 — except idempotent ones without a body").
func TestAppTransportAppDiesHoldingRequest(t *testing.T) {
	for _, tc := range []struct {
		method string
		repeat bool
	}{{"GET", true}, {"HEAD", true}, {"POST", false}, {"DELETE", false}} {
		var ts *httptest.Server
		ts, _, tr := appServer(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("die") == "" {
				return
			}
			ts.Listener.Close() // no replacement on this port
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
		})
		if _, _, err := get(t, tr, context.Background(), "GET", ""); err != nil { // a pooled connection
			t.Fatal(err)
		}
		req, _ := http.NewRequest(tc.method, "http://app/x?die=1", nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%s to an app that died holding it: %d, want an error", tc.method, resp.StatusCode)
		}
		var de *DialError
		if g := errors.As(err, &de); g != tc.repeat {
			t.Errorf("%s to an app that died holding it: %v; a DialError (repeat it): %v, want %v", tc.method, err, g, tc.repeat)
		}
	}
}

func TestAppTransportConnectionClose(t *testing.T) {
	_, conns, tr := appServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	for i := 0; i < 3; i++ {
		if _, _, err := get(t, tr, context.Background(), "GET", ""); err != nil {
			t.Fatal(err)
		}
	}
	if g := conns.Load(); g != 3 {
		t.Errorf("Connection: close answers reused a connection: %d connections for 3 requests", g)
	}
}

// The request's context interrupts a request the app does not answer.
func TestAppTransportContextCancels(t *testing.T) {
	release := make(chan struct{})
	_, _, tr := appServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := get(t, tr, ctx, "GET", ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the context's deadline", err)
	}
}

func TestAppTransportDialError(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	tr := New(port)
	var de *DialError
	if _, _, err := get(t, tr, context.Background(), "GET", ""); !errors.As(err, &de) {
		t.Errorf("got %v, want a DialError", err)
	}
}

// An interim answer does not leave the final one behind on the connection.
func TestAppTransportInterimAnswer(t *testing.T) {
	_, conns, tr := appServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("hints") != "" {
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		}
		if r.URL.Query().Get("continue") != "" {
			w.WriteHeader(http.StatusContinue) // 100, the lowest interim status
		}
		io.WriteString(w, "final")
	})
	for i, query := range []string{"hints=1", "continue=1", "hints=1&continue=1"} {
		req, _ := http.NewRequest("GET", "http://app/x?"+query, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "final" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	if g := conns.Load(); g != 1 {
		t.Errorf("%d connections, want 1", g)
	}
}

// After the app restarts, every pooled connection is stale: a request still succeeds.
func TestAppTransportAllPooledStale(t *testing.T) {
	ts, _, tr := appServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	// Fill the pool with several connections.
	var resps []*http.Response
	for i := 0; i < 4; i++ {
		req, _ := http.NewRequest("GET", "http://app/x", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resps = append(resps, resp)
	}
	for _, resp := range resps {
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	ts.CloseClientConnections()
	if _, body, err := get(t, tr, context.Background(), "GET", ""); err != nil || body != "ok" {
		t.Errorf("with a pool of stale connections: %q, %v", body, err)
	}
}
