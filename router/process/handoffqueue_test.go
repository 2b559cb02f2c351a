package process

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// handoffPair is a sending and a receiving handoff in one run directory, the receiver's
// connections going to q.
func handoffPair(t *testing.T, maxWait time.Duration) (from, to *handoff, q *connQueue) {
	t.Helper()
	dir := t.TempDir()
	logger := slog.New(slog.DiscardHandler)
	from, err := newHandoff(dir, 0, logger, new(atomic.Uint64))
	if err != nil {
		t.Fatal(err)
	}
	to, err = newHandoff(dir, 1, logger, new(atomic.Uint64))
	if err != nil {
		t.Fatal(err)
	}
	to.maxWait = func() time.Duration { return maxWait }
	q = newConnQueue()
	if err := to.open(q); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		q.Close()
		for {
			c, err := q.Accept()
			if err != nil {
				break
			}
			c.Close()
		}
		to.shutdown()
		from.shutdown()
	})
	return from, to, q
}

// clientConn returns the client's end of a TCP connection on loopback and the server's end.
func clientConn(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// fillQueue fills q, so that the receiver stops taking connections from its socket, as a
// stopped router does; the returned function empties it again.
func fillQueue(t *testing.T, q *connQueue) (drain func()) {
	t.Helper()
	for range cap(q.ch) {
		a, b := net.Pipe()
		b.Close()
		if !q.push(a) {
			t.Fatal("the queue is closed")
		}
	}
	return func() {
		for range cap(q.ch) {
			c, err := q.Accept()
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
}

// A connection that waited in the receiver's socket longer than maxWait is answered there,
// 503 with Retry-After, its request never served; its sender let it go when it sent it.
func TestHandoffStaleConnectionAnswered(t *testing.T) {
	const maxWait = 100 * time.Millisecond
	from, _, q := handoffPair(t, maxWait)
	drain := fillQueue(t, q)
	const request = "GET /late HTTP/1.1\r\nHost: x\r\n\r\n"
	var clients []net.Conn
	for range 2 {
		// The first may be taken at once (then waits on the full queue, not stale); the
		// second waits in the socket.
		client, server := clientConn(t)
		if err := from.send(1, server, []byte(request)); err != nil {
			t.Fatalf("send: %v", err)
		}
		server.Close() // the sender's copy: the receiver holds the connection now
		clients = append(clients, client)
	}
	<-time.After(2 * maxWait) // the time waited is what is tested
	drain()
	client := clients[1]
	client.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(client), nil)
	if err != nil {
		t.Fatalf("no answer to a connection that waited past the bound: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(string(body), "did not take the connection in time") {
		t.Errorf("answer %d %q (Retry-After %q), want 503 with Retry-After", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	// Nothing else is queued for it: the receiver served it, with that answer alone.
	select {
	case c := <-q.ch:
		if c.RemoteAddr().String() == client.LocalAddr().String() {
			t.Error("the stale connection was queued as well")
		}
		c.Close()
	default:
	}
}

// A receiver that takes no connections (stopped) fills its socket's queue: a send then fails
// at once, and the sender keeps the connection, rather than waiting.
func TestHandoffSendDoesNotWait(t *testing.T) {
	from, _, q := handoffPair(t, time.Minute)
	drain := fillQueue(t, q)
	defer drain()
	for i := 0; ; i++ {
		if i == 1000 {
			t.Fatal("1000 sends to a receiver that takes none all succeeded")
		}
		_, server := clientConn(t)
		done := make(chan error, 1)
		go func() { done <- from.send(1, server, []byte("GET / HTTP/1.1\r\n\r\n")) }()
		select {
		case err := <-done:
			if err != nil {
				return // the queue is full: the sender keeps the connection
			}
			server.Close()
		case <-time.After(10 * time.Second):
			t.Fatalf("send %d to a full queue is still waiting after 10s", i)
		}
	}
}
