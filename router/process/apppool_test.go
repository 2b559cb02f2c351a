package process

import (
	"bufio"
	"context"
	"encoding/json"
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
func pipeConn(t *testing.T) (*appConn, <-chan struct{}) {
	t.Helper()
	a, b := net.Pipe()
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, b) // ends when a is closed
		b.Close()
		close(closed)
	}()
	t.Cleanup(func() { a.Close() })
	return &appConn{c: a, br: bufio.NewReader(a), bw: bufio.NewWriter(a)}, closed
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}

// After a burst, a pool keeps at most maxIdleApp idle connections and closes the rest.
func TestAppPoolBound(t *testing.T) {
	tr := &appTransport{}
	defer tr.CloseIdleConnections()
	var closed []<-chan struct{}
	for range maxIdleApp + 10 {
		ac, c := pipeConn(t)
		closed = append(closed, c)
		tr.put(ac)
	}
	tr.mu.Lock()
	n := len(tr.idle)
	tr.mu.Unlock()
	if n != maxIdleApp {
		t.Errorf("%d idle connections kept, want %d", n, maxIdleApp)
	}
	for i, c := range closed[maxIdleApp:] {
		if !isClosed(c) {
			t.Errorf("connection %d past the bound still open after 5s", maxIdleApp+i)
		}
	}
}

// A connection idle for appIdleTimeout is closed by the reaper, and never handed out by get.
func TestAppPoolIdleTimeout(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	dials := 0
	tr := &appTransport{now: clock, idleTimeout: time.Hour, // the real timer never fires here
		dial: func(context.Context) (net.Conn, error) { dials++; a, _ := net.Pipe(); return a, nil }}
	defer tr.CloseIdleConnections()

	first, firstClosed := pipeConn(t)
	tr.put(first)
	advance(40 * time.Minute)
	second, secondClosed := pipeConn(t)
	tr.put(second)
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
	ac, reused, err := tr.get(context.Background(), false)
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
	tr := newAppTransport(ts.Listener.Addr().(*net.TCPAddr).Port)
	tr.idleTimeout = 20 * time.Millisecond
	defer tr.CloseIdleConnections()
	if _, body, err := get(t, tr, context.Background(), "GET", ""); err != nil || body != "ok" {
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
	tr := newAppTransport(ln.Addr().(*net.TCPAddr).Port)
	defer tr.CloseIdleConnections()
	// The stray answer may come with the first (put sees it buffered) or after (quiet
	// sees it waiting): either way the second request goes on a new connection.
	if _, body, err := get(t, tr, context.Background(), "GET", ""); err != nil || body != "1" {
		t.Fatalf("first: %q, %v", body, err)
	}
	select {
	case <-written:
	case <-time.After(10 * time.Second):
		t.Fatal("the app did not write its stray answer within 10s")
	}
	if _, body, err := get(t, tr, context.Background(), "GET", ""); err != nil || body != "2" {
		t.Errorf("second: %q, %v; want the answer of a new connection, \"2\"", body, err)
	}
}

// A fan-out leg stops reading an app's answer at MaxFanoutAnswer and closes the connection:
// the app cannot write much more than the cut (plus socket buffers), on either engine.
func TestFanoutStopsReadingAtTheCut(t *testing.T) {
	const huge = 512 << 20
	for _, method := range []string{"GET", "DELETE"} {
		t.Run(method, func(t *testing.T) {
			done := make(chan int64, 1)
			app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				buf := make([]byte, 64<<10)
				var n int64
				for n < huge {
					k, err := w.Write(buf)
					n += int64(k)
					if err != nil {
						break
					}
				}
				done <- n
			}))
			defer app.Close()
			tc := newTestCluster(t, 1, time.Second)
			r := tc.routers[0]
			port := app.Listener.Addr().(*net.TCPAddr).Port
			inst := &instance{port: port, transport: newAppTransport(port)}
			defer inst.transport.CloseIdleConnections()
			r.apps.setCurrent(inst)

			req := httptest.NewRequest(method, "/big", nil)
			req.Header.Set(HeaderIndex, FanoutIndex)
			req.Header.Set(HeaderSecret, "s3cr3t")
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, req)
			var answers []FanoutAnswer
			if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &answers) != nil || len(answers) != 1 {
				t.Fatalf("fan-out: %d %.200s", rec.Code, rec.Body)
			}
			if a := answers[0]; !a.Truncated || len(a.Body)+len(a.BodyBase64) == 0 {
				t.Errorf("the leg's answer: truncated %v, %d bytes; want truncated at the cut", a.Truncated, len(a.Body))
			}
			select {
			case n := <-done:
				t.Logf("the app wrote %d bytes", n)
				if n >= 64<<20 {
					t.Errorf("the app wrote %d bytes before its connection closed; the leg read on past the %d-byte cut", n, MaxFanoutAnswer)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the app was still writing 30s after the fan-out answered: its connection was not closed")
			}
		})
	}
}
