package appleg

import (
	"bufio"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/olio-dev/olio/router/internal/httprules"
)

// fastFront is a public server in front of one app, serving every request through the
// engine (fast) or through a reference httputil.ReverseProxy over http.Transport with the
// same request rules, both answering a failure with the same 502, so the two can be
// compared on the wire.
func fastFront(t *testing.T, app http.HandlerFunc, fast bool) *httptest.Server {
	t.Helper()
	as := httptest.NewServer(app)
	t.Cleanup(as.Close)
	return fastFrontOf(t, as, fast)
}

func fastFrontOf(t *testing.T, as *httptest.Server, fast bool) *httptest.Server {
	t.Helper()
	port, _ := strconv.Atoi(as.URL[strings.LastIndexByte(as.URL, ':')+1:])
	app := New(port)
	discard := log.New(io.Discard, "", 0)
	leg := &Leg{ErrorLog: discard}
	fail := func(w http.ResponseWriter) { http.Error(w, "the app failed to answer", http.StatusBadGateway) }
	target := &url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(port)}
	tr := &http.Transport{DisableCompression: true}
	ref := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			delete(pr.Out.Header, "Expect")
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			httprules.SetForwarded(pr.Out.Header, httprules.ForwardedOf(pr.In, false, false))
		},
		Transport:    tr,
		ErrorLog:     discard,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) { fail(w) },
	}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !fast {
			ref.ServeHTTP(w, req)
			return
		}
		up, err := leg.Serve(w, req, app, httprules.ForwardedOf(req, false, false))
		if up != nil {
			up.Body.Close()
			err = errors.New("an upgrade")
		}
		if err != nil {
			fail(w)
		}
	}))
	t.Cleanup(func() { front.Close(); app.CloseIdleConnections(); tr.CloseIdleConnections() })
	return front
}

// TestRequestForwardedFields: the app gets the forwarded fields it is given, and none of
// the client's own.
func TestRequestForwardedFields(t *testing.T) {
	req := httptest.NewRequest("GET", "/x", nil)
	req.RemoteAddr = "127.0.0.1:4000"
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("Forwarded", "for=203.0.113.7")
	for _, trusted := range []bool{false, true} {
		fw := httprules.ForwardedOf(req, false, trusted)
		want := http.Header{}
		httprules.SetForwarded(want, fw)
		out := fasthttp.AcquireRequest()
		appRequest(out, req, 1, &fw)
		got := http.Header{}
		for _, k := range httprules.ForwardedNames {
			if v := out.Header.Peek(k); v != nil {
				got[k] = []string{string(v)}
			}
		}
		fasthttp.ReleaseRequest(out)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("trusted %v: the app is sent %v, want %v", trusted, got, want)
		}
	}
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
		return "no answer: " + err.Error()
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		body = append(body, " (broken: "+err.Error()+")"...)
	}
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
	fast := fastFrontOf(t, app, true)
	slow := fastFrontOf(t, app, false)
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
		"GET /x?a=1;b=2&c=%zz&d=4 HTTP/1.1\r\nHost: h\r\n\r\n", // what does not parse is dropped
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
	}, true)
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

// rawApp is an app that answers each path with a canned answer, byte for byte, and closes
// the connection.
func rawApp(t *testing.T, answers map[string]string) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.WriteString(c, answers[req.URL.Path])
			}()
		}
	}()
	// An unstarted httptest.Server only carries the address to fastFrontOf.
	s := &httptest.Server{Listener: ln, URL: "http://" + ln.Addr().String()}
	t.Cleanup(func() { ln.Close() })
	return s
}

// TestFastPathOddAnswers: answers that stretch HTTP/1.1 reach the client as they do through
// ReverseProxy (or fail the same way). An answer of unknown length carries a Content-Type:
// without one, whether net/http sniffs one depends on a race in ReverseProxy (its first
// flush of the header runs on a timer), where the fast path flushes the header first.
func TestFastPathOddAnswers(t *testing.T) {
	answers := map[string]string{
		"/te-and-cl":           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nContent-Type: text/x\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"/http10":              "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/fold":                "HTTP/1.1 200 OK\r\nX-Fold: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
		"/close":               "HTTP/1.1 200 OK\r\nContent-Type: text/x\r\n\r\nuntil the end",
		"/two-cl":              "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk",
		"/same-cl":             "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
		"/hints":               "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/big":                 "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", 40<<10) + "\r\nContent-Length: 2\r\n\r\nok",
		"/no-reason":           "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
		"/bad-status":          "HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok",
		"/short":               "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok",
		"/lower":               "HTTP/1.1 200 OK\r\nx-lower-case: 1\r\ncontent-length: 2\r\n\r\nok",
		"/cookie":              "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/; HttpOnly\r\nSet-Cookie: weird\r\nContent-Length: 2\r\n\r\nok",
		"/chunk-ext":           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/x\r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
		"/ct-default":          "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n<html",
		"/304":                 "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nEtag: \"x\"\r\n\r\n",
		"/te-identity":         "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Type: text/x\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"/lf":                  "HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"/lf-end":              "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok",
		"/lf-field":            "HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 2\r\n\r\nok",
		"/bare-cr":             "HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\nContent-Length: 2\r\n\r\nok",
		"/space-colon":         "HTTP/1.1 200 OK\r\nX-Bad : 1\r\nContent-Length: 2\r\n\r\nok",
		"/tab-colon":           "HTTP/1.1 200 OK\r\nX-Bad\t: 1\r\nContent-Length: 2\r\n\r\nok",
		"/head-204":            "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
		"/trailers-undeclared": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/x\r\n\r\n5\r\nhello\r\n0\r\nX-Surprise: 1\r\n\r\n",
		"/trailers-declared":   "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\nContent-Type: text/x\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n",
		"/many-hints":          strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", 6) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	}
	app := rawApp(t, answers)
	fast := fastFrontOf(t, app, true)
	slow := fastFrontOf(t, app, false)
	for path := range answers {
		raw := "GET " + path + " HTTP/1.1\r\nHost: h\r\n\r\n"
		g := rawExchange(t, fast.Listener.Addr().String(), raw)
		w := rawExchange(t, slow.Listener.Addr().String(), raw)
		if g != w {
			t.Errorf("%s:\nfast path:\n%s\nReverseProxy:\n%s", path, g, w)
		}
	}
}

// TestFastPathEventStream: the header of an event stream reaches the client before the
// first event.
func TestFastPathEventStream(t *testing.T) {
	got := make(chan struct{})
	front := fastFront(t, func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Header().Set("Content-Length", "12")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-got:
			io.WriteString(w, "data: one\n\n")
		case <-req.Context().Done():
		}
	}, true)
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(front.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	close(got)
	if b, err := io.ReadAll(resp.Body); string(b) != "data: one\n\n" {
		t.Errorf("body %q, %v", b, err)
	}
}

// TestFastPathReusesConnections: sequential requests on the fast path share one keep-alive
// connection to the app, streamed answers included.
func TestFastPathReusesConnections(t *testing.T) {
	var conns atomic.Int32
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/stream" {
			io.WriteString(w, "a")
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "ok")
	}))
	app.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	app.Start()
	defer app.Close()
	front := fastFrontOf(t, app, true)
	for i := 0; i < 20; i++ {
		path := "/"
		if i%2 == 1 {
			path = "/stream"
		}
		resp, err := http.Get(front.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if g := conns.Load(); g != 1 {
		t.Errorf("20 sequential requests used %d connections to the app, want 1", g)
	}
}

// An app that answers before it has read a long body (a 413) is answered to the client,
// and its connection is closed, not pooled, unless the whole body went out within
// http.Transport's wait; never is anything sent after the body on it.
func TestEngineEarlyAnswerClosesConnection(t *testing.T) {
	const size = 32 << 20 // more than the sockets between client, router and app hold
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			closed <- err
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
		// Read the body only now. The router either closes the connection before the body's
		// end (its writer had not finished by the answer's end), or, having sent the whole
		// body within http.Transport's wait, may keep it: then nothing may follow the body.
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := io.CopyN(io.Discard, br, size)
		switch {
		case n < size && (err == io.EOF || errors.Is(err, syscall.ECONNRESET)):
			closed <- nil
		case n < size:
			closed <- err
		default:
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if m, _ := br.Read(make([]byte, 1)); m > 0 {
				closed <- errors.New("bytes after the request's body")
				return
			}
			closed <- nil
		}
	}()
	app := &httptest.Server{Listener: ln, URL: "http://" + ln.Addr().String()}
	front := fastFrontOf(t, app, true)
	c, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
		io.Copy(c, io.LimitReader(zeros{}, size))
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || string(b) != "too large" {
		t.Errorf("got %d %q, want the app's 413", resp.StatusCode, b)
	}
	select {
	case err := <-closed:
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the app's connection did not end with a close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the router kept the app's connection with the body's rest unread (30s)")
	}
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
