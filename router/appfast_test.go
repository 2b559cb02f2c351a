package router

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/olio-dev/olio/descend"
)

// fastFront is a public server in front of one app, serving every request on the fast path
// (fast) or through newLocalProxy (ReverseProxy), so the two can be compared on the wire.
func fastFront(t *testing.T, app http.HandlerFunc, fast bool, timeout time.Duration) *httptest.Server {
	t.Helper()
	as := httptest.NewServer(app)
	t.Cleanup(as.Close)
	return fastFrontOf(t, as, fast, timeout)
}

// fastFrontOf is fastFront in front of the app server as.
func fastFrontOf(t *testing.T, as *httptest.Server, fast bool, timeout time.Duration) *httptest.Server {
	t.Helper()
	set, err := newSettings(&descend.Config{Index: 0, Key: "header:X-Olio-Key", Secret: "s3cr3t", RunDir: t.TempDir(),
		ForwardTimeout: time.Second, RequestTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	r := newRouter(0, set, slog.New(slog.DiscardHandler))
	port, _ := strconv.Atoi(as.URL[strings.LastIndexByte(as.URL, ':')+1:])
	inst := &instance{port: port, transport: newAppTransport(port)}
	inst.proxy = r.newLocalProxy(inst)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !fastPath(req) {
			t.Errorf("%s %s does not take the fast path", req.Method, req.URL)
		}
		if fast {
			r.serveFast(w, req, inst)
		} else {
			inst.proxy.ServeHTTP(w, req)
		}
	}))
	t.Cleanup(func() { front.Close(); inst.transport.CloseIdleConnections() })
	return front
}

// rawExchange sends a raw request to addr and returns what the app received (the echo
// handler's body) and the raw answer with its Date line removed.
func rawExchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, raw)
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Header.Del("Date")
	var b strings.Builder
	resp.Header.Write(&b)
	resp.Trailer.Write(&b)
	return resp.Status + "\n" + b.String() + "\n" + string(body)
}

// echoApp answers with the request it received and a header set that mixes hop-by-hop and
// end-to-end headers, and trailers on /trailers.
func echoApp(w http.ResponseWriter, req *http.Request) {
	h := w.Header()
	h["Connection"] = []string{"X-Drop"}
	h["X-Drop"] = []string{"hop"}
	h["Keep-Alive"] = []string{"timeout=5"}
	h["Set-Cookie"] = []string{"a=1; Path=/", "b=2"}
	h["X-Multi"] = []string{"1", "2"}
	if req.URL.Path == "/trailers" {
		h["Trailer"] = []string{"X-Sum"}
	}
	if req.URL.Path == "/empty" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var b strings.Builder
	b.WriteString(req.Method + " " + req.RequestURI + " " + req.Host + "\n")
	req.Header.Write(&b)
	io.WriteString(w, b.String())
	if req.URL.Path == "/trailers" {
		h.Set("X-Sum", "42")
	}
}

// TestFastPathAsReverseProxy: the app receives the same request, and the client the same
// answer, on the fast path as through ReverseProxy.
func TestFastPathAsReverseProxy(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(echoApp))
	defer app.Close()
	fast := fastFrontOf(t, app, true, 5*time.Second)
	slow := fastFrontOf(t, app, false, 5*time.Second)
	reqs := []string{
		"GET /x?q=1&r=%2F HTTP/1.1\r\nHost: example.com\r\nCookie: a=b;c\r\nCookie: d=e\r\nConnection: X-Hop\r\nX-Hop: 1\r\n" +
			"Keep-Alive: 5\r\nTe: trailers, deflate\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Forwarded-Proto: https\r\n" +
			"Proxy-Authorization: x\r\nUser-Agent: ua\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
		"GET /a/../b//c HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
		"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /trailers HTTP/1.1\r\nHost: h\r\nTe: trailers\r\n\r\n",
		"GET /empty HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /x HTTP/1.0\r\n\r\n",
		"GET http://abs.example/x?y HTTP/1.1\r\nHost: abs.example\r\n\r\n",
	}
	for _, raw := range reqs {
		g := rawExchange(t, fast.Listener.Addr().String(), raw)
		w := rawExchange(t, slow.Listener.Addr().String(), raw)
		if g != w {
			t.Errorf("%q:\nfast path:\n%s\nReverseProxy:\n%s", raw, g, w)
		}
	}
}

// TestFastPathStreams: an answer of unknown length reaches the client as the app writes it.
func TestFastPathStreams(t *testing.T) {
	got := make(chan struct{})
	front := fastFront(t, func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-got:
			io.WriteString(w, "second\n")
		case <-req.Context().Done():
		}
	}, true, 5*time.Second)
	resp, err := http.Get(front.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(got)
	if line, err := br.ReadString('\n'); line != "second\n" {
		t.Fatalf("second line %q, %v", line, err)
	}
}

// TestFastPathTimeout: an app that does not answer within the request timeout gets its
// request cancelled (its connection closed), and the client a 504.
func TestFastPathTimeout(t *testing.T) {
	cancelled := make(chan struct{})
	set, err := newSettings(&descend.Config{Index: 0, Key: "header:X-Olio-Key", Secret: "s3cr3t", RunDir: t.TempDir(),
		ForwardTimeout: time.Second, RequestTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := newRouter(0, set, slog.New(slog.DiscardHandler))
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		<-req.Context().Done()
		close(cancelled)
	}))
	defer as.Close()
	port, _ := strconv.Atoi(as.URL[strings.LastIndexByte(as.URL, ':')+1:])
	inst := &instance{port: port, transport: newAppTransport(port)}
	inst.proxy = r.newLocalProxy(inst)
	r.apps.setCurrent(inst)
	defer inst.transport.CloseIdleConnections()
	rec := httptest.NewRecorder()
	r.serveLocal(rec, httptest.NewRequest("GET", "/", nil), nil)
	if rec.Code != http.StatusGatewayTimeout {
		t.Errorf("status %d, want 504: %s", rec.Code, rec.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Error("the app's request was not cancelled")
	}
}
