package process

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// A drain answers the request in flight and the one pipelined behind it (that one with
// "Connection: close"), closes an idle keep-alive connection and one that never sent
// anything, and returns once every connection is gone.
func TestDrainerAnswersThenCloses(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			select {
			case <-release:
			case <-time.After(60 * time.Second): // bounded, so that a failing test ends
			}
		}
		io.WriteString(w, "ok")
	})}
	d := NewDrainer(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	dial := func() (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(20 * time.Second))
		return c, bufio.NewReader(c)
	}
	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n" }
	answer := func(r *bufio.Reader) *http.Response {
		t.Helper()
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	idle, idleR := dial()
	io.WriteString(idle, get("/"))
	answer(idleR) // now idle, kept alive
	silent, _ := dial()
	busy, busyR := dial()
	io.WriteString(busy, get("/slow"))
	waitDone(t, started, 20*time.Second, "the slow request to reach the handler")

	ln.Close()
	waitDone(t, served, 20*time.Second, "Serve to return after its listener closed")
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		d.Wait(ctx)
	}()
	// Only Wait closes them: /after, sent once they are closed, arrives during the drain.
	for _, c := range []net.Conn{idle, silent} {
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("an idle or silent connection during a drain: %v, want EOF", err)
		}
	}
	io.WriteString(busy, get("/after"))
	close(release)
	if resp := answer(busyR); resp.StatusCode != http.StatusOK {
		t.Errorf("the request in flight got %d", resp.StatusCode)
	}
	if resp := answer(busyR); resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("the request after the drain began got %d, Connection: %q; want 200 and close", resp.StatusCode, resp.Header.Get("Connection"))
	}
	select {
	case <-drained:
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not return once every connection was closed")
	}
}
