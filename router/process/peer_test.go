package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/olio-dev/olio/mux"
	"github.com/olio-dev/olio/router/internal/peerwire"
)

// newPeerCluster is a two-router cluster whose worker 1 serves h in-process, reached from
// router 0 through the peer leg; url is router 0's public side.
func newPeerCluster(t *testing.T, h http.HandlerFunc) (tc *testCluster, url string) {
	t.Helper()
	tc = newTestCluster(t, 2, time.Second)
	tc.routers[1].handler = h
	srv := httptest.NewServer(tc.routers[0])
	t.Cleanup(srv.Close)
	return tc, srv.URL
}

// forward sends req to worker 1 through router 0.
func forward(t *testing.T, req *http.Request) *http.Response {
	t.Helper()
	req.Header.Set(HeaderIndex, "1")
	req.Header.Set(HeaderSecret, "s3cr3t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// An answer's trailers cross the peer leg, and a request body of unknown length streams.
func TestPeerTrailers(t *testing.T) {
	_, url := newPeerCluster(t, func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "%d", len(b))
		w.Header().Set("X-Sum", "42")
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	})
	req, _ := http.NewRequest("POST", url, io.MultiReader(strings.NewReader("hello "), strings.NewReader("world")))
	req.ContentLength = -1
	resp := forward(t, req)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if g, e := resp.StatusCode, http.StatusAccepted; g != e {
		t.Errorf("status %d, want %d", g, e)
	}
	if g, e := string(b), "11"; g != e {
		t.Errorf("body %q, want %q (the request body's length)", g, e)
	}
	if g, e := resp.Trailer.Get("X-Sum"), "42"; g != e {
		t.Errorf("announced trailer %q, want %q", g, e)
	}
	if g, e := resp.Trailer.Get("X-Late"), "yes"; g != e {
		t.Errorf("unannounced trailer %q, want %q", g, e)
	}
}

// A flushed part of an answer reaches the client before the answer ends.
func TestPeerStreams(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	done := func() { once.Do(func() { close(release) }) }
	_, url := newPeerCluster(t, func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-req.Context().Done():
		}
		io.WriteString(w, "second\n")
	})
	defer done() // before the servers close: the handler ends
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := mustRequest("GET", url).WithContext(ctx)
	req.Header.Set(HeaderIndex, "1")
	req.Header.Set(HeaderSecret, "s3cr3t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("no answer within 10s while the handler held its end after a flush (a flush that sends nothing): %v", err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("the flushed first line did not reach the client within 10s while the handler held the rest: %q, %v", line, err)
	}
	done()
	if line, _ := br.ReadString('\n'); line != "second\n" {
		t.Errorf("second line %q", line)
	}
}

// An answer given before the request body is read closes its stream; the next request is
// served all the same, body and all.
func TestPeerEarlyAnswer(t *testing.T) {
	_, url := newPeerCluster(t, func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/early" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		b, _ := io.ReadAll(req.Body)
		fmt.Fprint(w, len(b))
	})
	big := strings.Repeat("x", 1<<20)
	for i := 0; i < 3; i++ {
		resp := forward(t, mustRequestBody("POST", url+"/early", big))
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("early answer: %d", resp.StatusCode)
		}
		resp = forward(t, mustRequestBody("POST", url+"/read", big))
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if g, e := string(b), fmt.Sprint(len(big)); g != e {
			t.Fatalf("after an early answer: %d %q, want %q", resp.StatusCode, g, e)
		}
	}
}

// A client that goes away cancels the owner's request.
func TestPeerClientGoneCancels(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	_, url := newPeerCluster(t, func(w http.ResponseWriter, req *http.Request) {
		close(started)
		select {
		case <-req.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // bounds the request too
	defer cancel()
	req := mustRequest("GET", url).WithContext(ctx)
	req.Header.Set(HeaderIndex, "1")
	req.Header.Set(HeaderSecret, "s3cr3t")
	go func() {
		select {
		case <-started:
			cancel()
		case <-ctx.Done():
		}
	}()
	http.DefaultClient.Do(req)
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the owner's request was not cancelled when the client went away")
	}
}

// An upgrade through the peer leg gives the owner a raw tunnel to the client.
func TestPeerUpgrade(t *testing.T) {
	_, url := newPeerCluster(t, func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Upgrade") != "echo" {
			http.Error(w, "upgrade expected", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo: " + line)
		brw.Flush()
	})
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n%s: 1\r\n%s: s3cr3t\r\n\r\n", HeaderIndex, HeaderSecret)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("answer to the upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "hi\n")
	if line, err := br.ReadString('\n'); line != "echo: hi\n" {
		t.Errorf("through the tunnel: %q, %v", line, err)
	}
}

// A HEAD answer keeps its length and has no body; a short answer gets its length.
func TestPeerLengths(t *testing.T) {
	_, url := newPeerCluster(t, func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, "four")
	})
	resp := forward(t, mustRequest("GET", url))
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ContentLength != 4 || string(b) != "four" {
		t.Errorf("GET: length %d, body %q", resp.ContentLength, b)
	}
	resp = forward(t, mustRequest("HEAD", url))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != 4 {
		t.Errorf("HEAD: %d, length %d (want 200 and the GET's 4, as net/http's server says)", resp.StatusCode, resp.ContentLength)
	}
}

// A handler that writes more than the Content-Length it set: the excess is refused, as net/http's
// server refuses it, and the client gets the declared body.
func TestPeerBodyPastContentLength(t *testing.T) {
	werr := make(chan error, 1)
	_, url := newPeerCluster(t, func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Length", "4")
		io.WriteString(w, "four")
		_, err := io.WriteString(w, "more")
		werr <- err
	})
	resp := forward(t, mustRequest("GET", url))
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.ContentLength != 4 || string(b) != "four" {
		t.Errorf("GET: length %d, body %q, %v", resp.ContentLength, b, err)
	}
	var werrv error
	select {
	case werrv = <-werr:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's write past the length did not return within 10s")
	}
	if err := werrv; !errors.Is(err, http.ErrContentLength) {
		t.Errorf("the write past the length: %v, want http.ErrContentLength", err)
	}
}

func mustRequest(method, url string) *http.Request {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		panic(err)
	}
	return req
}

func mustRequestBody(method, url, body string) *http.Request {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		panic(err)
	}
	return req
}

// The app sees a forwarded request's header as it sees the same request served where it
// was accepted: hop-by-hop fields and the client's X-Forwarded-* dropped, the router's set.
func TestPeerRequestHeaderAsLocal(t *testing.T) {
	tc := newTestCluster(t, 2, time.Second)
	seen := func(accept int) http.Header {
		req := httptest.NewRequest("GET", "/p?a=1;b=2", nil)
		req.RemoteAddr = "192.0.2.9:4321"
		req.Header.Set("Connection", "X-Hop, keep-alive")
		req.Header.Set("X-Hop", "1")
		req.Header.Set("Keep-Alive", "timeout=5")
		req.Header.Set("Proxy-Authorization", "Basic eA==")
		req.Header.Set("Te", "trailers")
		req.Header.Set("X-Forwarded-For", "203.0.113.1")
		req.Header.Set("Forwarded", "for=203.0.113.1")
		req.Header.Set("X-Kept", "yes")
		req.Header.Add("X-Many", "1")
		req.Header.Add("X-Many", "2")
		req.Header.Set(HeaderIndex, "1")
		req.Header.Set(HeaderSecret, "s3cr3t")
		rec, a := tc.do(accept, req)
		if rec.Code != http.StatusOK || a.Index != 1 {
			t.Fatalf("accepted by %d: %d, served by %d", accept, rec.Code, a.Index)
		}
		return a.Headers
	}
	local, forwarded := seen(1), seen(0)
	for _, h := range []http.Header{local, forwarded} {
		delete(h, "Accept-Encoding") // the app's client side
	}
	if g, e := fmt.Sprint(forwarded), fmt.Sprint(local); g != e {
		t.Errorf("forwarded, the app sees\n%s\nserved where accepted\n%s", g, e)
	}
	if forwarded.Get("X-Hop") != "" || forwarded.Get("X-Forwarded-For") != "192.0.2.9" || forwarded.Get("X-Kept") != "yes" {
		t.Errorf("forwarded header: %v", forwarded)
	}
}

// An answer's hop-by-hop fields stay on the owner's side of the peer leg.
func TestPeerResponseHops(t *testing.T) {
	tc := newTestCluster(t, 2, time.Second)
	tc.routers[1].handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Kept", "yes")
		w.WriteHeader(http.StatusTeapot)
	})
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set(HeaderIndex, "1")
	req.Header.Set(HeaderSecret, "s3cr3t")
	rec, _ := tc.do(0, req)
	h := rec.Header()
	if rec.Code != http.StatusTeapot || h.Get("X-Kept") != "yes" || h.Get("X-Hop") != "" || h.Get("Keep-Alive") != "" || h.Get("Connection") != "" {
		t.Errorf("got %d %v", rec.Code, h)
	}
}

// A draining owner finishes the requests peers forwarded before its peer server's Shutdown
// returns, and closes its idle streams at once.
func TestPeerShutdownFinishesStreams(t *testing.T) {
	tc := newTestCluster(t, 2, time.Second)
	started, release := make(chan struct{}), make(chan struct{})
	tc.routers[1].handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/slow" {
			close(started)
			select {
			case <-release:
			case <-time.After(60 * time.Second): // bounded, so that a failing test ends
			}
		}
		io.WriteString(w, "done")
	})
	dir := t.TempDir()
	ln, err := mux.Listen(filepath.Join(dir, "peer.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := tc.routers[1].newPeerServer()
	go srv.Serve(ln)
	tc.routers[0].pool.SetPeers([]string{filepath.Join(dir, "unused.sock"), ln.Addr().String()})
	get := func(path string) chan *httptest.ResponseRecorder {
		ch := make(chan *httptest.ResponseRecorder, 1)
		go func() {
			req := httptest.NewRequest("GET", path, nil)
			req.Header.Set(HeaderIndex, "1")
			req.Header.Set(HeaderSecret, "s3cr3t")
			rec, _ := tc.do(0, req)
			ch <- rec
		}()
		return ch
	}
	var rec *httptest.ResponseRecorder
	select {
	case rec = <-get("/fast"):
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to /fast within 10s")
	}
	if rec.Code != http.StatusOK { // leaves an idle stream behind
		t.Fatalf("fast: %d", rec.Code)
	}
	slow := get("/slow")
	waitDone(t, started, 10*time.Second, "the slow request to reach the owner's handler")
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	waitUntil(t, "the owner is shutting down", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.shutting
	})
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a forwarded request running", err)
	default:
	}
	close(release)
	select {
	case rec = <-slow:
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the request running at Shutdown within 10s of its release")
	}
	if rec.Code != http.StatusOK || rec.Body.String() != "done" {
		t.Errorf("the request running at Shutdown: %d %q", rec.Code, rec.Body)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return once the last request was answered")
	}
}

// An owner that takes an upgrade's stream over and refuses the upgrade: its answer reaches
// the client.
func TestPeerUpgradeRefused(t *testing.T) {
	_, url := newPeerCluster(t, func(w http.ResponseWriter, _ *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
		brw.Flush()
	})
	req := mustRequest("GET", url)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp := forward(t, req)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUpgradeRequired || string(b) != "nope" {
		t.Errorf("got %d %q", resp.StatusCode, b)
	}
}

// TestPeerShutdownServesAFreshStream: a stream a peer opened just before the owner began to
// shut down (yamux announces it before its first bytes) still gets its request answered.
func TestPeerShutdownServesAFreshStream(t *testing.T) {
	tc := newTestCluster(t, 2, time.Second)
	tc.routers[1].handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { io.WriteString(w, "ok") })
	path := filepath.Join(t.TempDir(), "peer.sock")
	ln, err := mux.Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := tc.routers[1].newPeerServer()
	go srv.Serve(ln)
	defer srv.Close()
	pool := mux.NewPool(nil)
	defer pool.Close()
	pool.SetPeers([]string{path})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pool.Open(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitUntil(t, "the owner has the stream", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.conns) == 1
	})
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	waitUntil(t, "the owner is shutting down", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.shutting
	})

	req := httptest.NewRequest("GET", "/fresh", nil)
	b := peerwire.AppendHello(nil, "s3cr3t")
	b = appendRequestHead(b, req, false, "")
	b = peerwire.AppendEnd(b, nil)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// The owner may answer, and close the session it drains, before this Write hears that its
	// bytes have left (yamux then says "session shutdown"): the answer is what counts.
	c.Write(b)
	typ, _, err := peerwire.ReadFrameHeader(bufio.NewReader(c))
	if err != nil || typ != peerwire.FrameResponse {
		t.Fatalf("the fresh stream's answer: frame %d, %v", typ, err)
	}
	c.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return within 10s of the fresh stream's answer")
	}
}
