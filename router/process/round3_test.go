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
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/olio-dev/olio/router/internal/appleg"
)

// withApp makes r serve its own keys through an app of h (the app leg: the fast path for a
// bodiless GET, ReverseProxy for the rest) instead of the test cluster's app.
func withApp(t *testing.T, r *Router, h http.HandlerFunc) {
	t.Helper()
	app := httptest.NewServer(h)
	port, _ := strconv.Atoi(app.URL[strings.LastIndexByte(app.URL, ':')+1:])
	inst := &instance{port: port, transport: appleg.New(port)}
	r.apps.setCurrent(inst)
	t.Cleanup(func() { inst.transport.CloseIdleConnections(); app.Close() })
}

// cutAnswer streams a line, flushes it, and breaks the answer off: a chunked answer the
// client must not take for complete.
func cutAnswer(w http.ResponseWriter, _ *http.Request) {
	io.WriteString(w, "part of the answer\n")
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}

// readCut reads an answer that its server broke off and fails unless the client sees an
// error after the part that was sent.
func readCut(t *testing.T, srv, what string, req *http.Request) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s: the client still waited for the end of a broken answer after 10s (read %q)", what, b)
	case err == nil:
		t.Errorf("%s: the client read %q to a clean end; an answer broken off mid-body must end in an error", what, b)
	case string(b) != "part of the answer\n":
		t.Errorf("%s: read %q before %v, want the part that was sent", what, b, err)
	}
}

// An answer that its owner breaks off mid-body, after a part was flushed, reaches the client
// as an error, never as a short answer that ends cleanly: served by an app (fast path and
// ReverseProxy) or by an in-process handler, local or forwarded over the peer leg.
func TestCutAnswerIsAnError(t *testing.T) {
	tc := newTestCluster(t, 2, time.Second)
	for i := range tc.routers {
		withApp(t, tc.routers[i], cutAnswer)
	}
	srv := httptest.NewServer(tc.routers[0])
	defer srv.Close()
	srv.Config.ErrorLog = nil
	for to, leg := range []string{"local", "forwarded"} {
		for _, method := range []string{"GET", "POST"} { // the fast path, ReverseProxy
			req := mustRequestBody(method, srv.URL+"/cut", "x")
			if method == "GET" {
				req = mustRequest(method, srv.URL+"/cut")
			}
			req.Header.Set(HeaderIndex, strconv.Itoa(to))
			req.Header.Set(HeaderSecret, "s3cr3t")
			readCut(t, srv.URL, fmt.Sprintf("%s %s of an app's answer", method, leg), req)
		}
	}
	for name, fail := range map[string]func(){
		"http.ErrAbortHandler": func() { panic(http.ErrAbortHandler) },
		"another panic":        func() { panic("the handler failed") },
	} {
		_, url := newPeerCluster(t, func(w http.ResponseWriter, req *http.Request) {
			io.WriteString(w, "part of the answer\n")
			w.(http.Flusher).Flush()
			fail()
		})
		req := mustRequest("GET", url)
		req.Header.Set(HeaderIndex, "1")
		req.Header.Set(HeaderSecret, "s3cr3t")
		readCut(t, url, "forwarded to an in-process handler that panics with "+name, req)
	}
}

// A tunnel its owner ends (the handler closes the upgraded connection) ends the client's
// connection too, and leaves no goroutine behind on either router.
func TestTunnelEndedByOwner(t *testing.T) {
	_, url := newPeerCluster(t, func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Upgrade") != "echo" {
			io.WriteString(w, "ok")
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close() // the owner ends the tunnel after one line
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo: " + line)
		brw.Flush()
	})
	addr := strings.TrimPrefix(url, "http://")
	send := func(c net.Conn, upgrade string) *bufio.Reader {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n%s%s: 1\r\n%s: s3cr3t\r\n\r\n", upgrade, HeaderIndex, HeaderSecret)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer: %v", err)
		}
		if upgrade == "" {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		} else if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("answer to the upgrade: %d", resp.StatusCode)
		}
		return br
	}
	// Connections first, each with a request on it, so that the baseline counts what stays
	// for the next request (the session, pooled streams, each connection's goroutine).
	const n = 5
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		send(c, "")
		conns[i] = c
	}
	base := runtime.NumGoroutine()
	for i, c := range conns {
		br := send(c, "Connection: Upgrade\r\nUpgrade: echo\r\n")
		io.WriteString(c, "hi\n")
		if line, err := br.ReadString('\n'); line != "echo: hi\n" {
			t.Fatalf("tunnel %d: %q, %v", i, line, err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		rest, err := io.ReadAll(br)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatalf("tunnel %d: the client's connection was still open 5s after the owner ended the tunnel", i)
		case err != nil || len(rest) > 0:
			t.Fatalf("tunnel %d: %q, %v after the owner ended it, want EOF", i, rest, err)
		}
	}
	// The clients' ends are still open: the routers must have let go of theirs.
	var now int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if now = runtime.NumGoroutine(); now <= base {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines 10s after %d tunnels ended, %d before them:\n%s", now, n, base, buf[:runtime.Stack(buf, true)])
		}
	}
}
