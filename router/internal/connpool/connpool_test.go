package connpool

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pipeConn is one end of a pipe as a pooled app connection; the other end reports its close.
func pipeConn(t *testing.T) (*Conn, <-chan struct{}) {
	t.Helper()
	a, b := net.Pipe()
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, b) // ends when a is closed
		b.Close()
		close(closed)
	}()
	t.Cleanup(func() { a.Close() })
	return newConn(a), closed
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}

// After a burst, a pool keeps at most DefaultMaxIdle idle connections and closes the rest.
func TestAppPoolBound(t *testing.T) {
	tr := &Pool{}
	defer tr.CloseIdleConnections()
	var closed []<-chan struct{}
	for range DefaultMaxIdle + 10 {
		ac, c := pipeConn(t)
		closed = append(closed, c)
		tr.Put(ac)
	}
	tr.mu.Lock()
	n := len(tr.idle)
	tr.mu.Unlock()
	if n != DefaultMaxIdle {
		t.Errorf("%d idle connections kept, want %d", n, DefaultMaxIdle)
	}
	for i, c := range closed[DefaultMaxIdle:] {
		if !isClosed(c) {
			t.Errorf("connection %d past the bound still open after 5s", DefaultMaxIdle+i)
		}
	}
}

// A connection idle for DefaultIdleTimeout is closed by the reaper, and never handed out by get.
func TestAppPoolIdleTimeout(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	dials := 0
	tr := &Pool{Now: clock, IdleTimeout: time.Hour, // the real timer never fires here
		Dial: func(context.Context) (net.Conn, error) { dials++; a, _ := net.Pipe(); return a, nil }}
	defer tr.CloseIdleConnections()

	first, firstClosed := pipeConn(t)
	tr.Put(first)
	advance(40 * time.Minute)
	second, secondClosed := pipeConn(t)
	tr.Put(second)
	advance(30 * time.Minute) // first idle 70 min, second 30 min
	tr.reap()
	if !isClosed(firstClosed) {
		t.Fatal("a connection idle past the timeout was not closed by reap")
	}
	select {
	case <-secondClosed:
		t.Fatal("a connection idle for less than the timeout was closed")
	default:
	}
	advance(31 * time.Minute) // second idle 61 min; get must not hand it out
	ac, reused, err := tr.Get(context.Background(), false)
	if err != nil || reused || ac == second || dials != 1 {
		t.Errorf("get after the timeout: reused %v, the idle one %v, %d dials, %v; want a new connection", reused, ac == second, dials, err)
	}
	if !isClosed(secondClosed) {
		t.Error("get left an expired connection open")
	}
}

// The reaper runs by itself: with a short timeout, an idle connection to a real app closes.
func TestAppPoolIdleCloses(t *testing.T) {
	closedConns := make(chan struct{}, 1)
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	ts.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			closedConns <- struct{}{}
		}
	}
	ts.Start()
	defer ts.Close()
	tr := loopback(ts.Listener.Addr().String())
	tr.IdleTimeout = 20 * time.Millisecond
	defer tr.CloseIdleConnections()
	if _, body, err := get(tr); err != nil || body != "ok" {
		t.Fatalf("GET: %q, %v", body, err)
	}
	select {
	case <-closedConns:
	case <-time.After(10 * time.Second):
		t.Fatal("the idle connection was still open 10s after its 20ms idle timeout")
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.idle) != 0 || tr.reaper != nil {
		t.Errorf("%d idle connections, reaper set %v, after the reap: want none", len(tr.idle), tr.reaper != nil)
	}
}

// A pooled connection on which the app sent something while it was idle is not used.
func TestAppPoolNotQuiet(t *testing.T) {
	var conns atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	written := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"+string(rune('0'+n)))
					if n == 1 {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nPWNED")
						close(written)
					}
				}
			}()
		}
	}()
	tr := loopback(ln.Addr().String())
	defer tr.CloseIdleConnections()
	// The stray answer may come with the first (put sees it buffered) or after (quiet
	// sees it waiting): either way the second request goes on a new connection.
	if _, body, err := get(tr); err != nil || body != "1" {
		t.Fatalf("first: %q, %v", body, err)
	}
	select {
	case <-written:
	case <-time.After(10 * time.Second):
		t.Fatal("the app did not write its stray answer within 10s")
	}
	if _, body, err := get(tr); err != nil || body != "2" {
		t.Errorf("second: %q, %v; want the answer of a new connection, \"2\"", body, err)
	}
}

// loopback is a pool of connections to the server at addr.
func loopback(addr string) *Pool {
	return &Pool{Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
}

// get sends one GET on a connection of p, reads the answer to its end and puts the
// connection back, as a leg does.
func get(p *Pool) (*http.Response, string, error) {
	req, err := http.NewRequest("GET", "http://app/", nil)
	if err != nil {
		return nil, "", err
	}
	var resp *http.Response
	var body []byte
	err = p.Exchange(req, func(ac *Conn) error {
		if err := req.Write(ac.W); err != nil {
			return err
		}
		if err := ac.W.Flush(); err != nil {
			return err
		}
		resp, err = http.ReadResponse(ac.R, req)
		if err != nil {
			return err
		}
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return errors.Join(ErrAnswerStarted, err)
		}
		p.Put(ac)
		return nil
	})
	return resp, string(body), err
}
