package router

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// appTransport carries requests from a router to its own app over loopback (its pool of
// connections also keeps peerTransport's streams to one peer). A request without a body —
// nearly every request of a key-affinity service — is written and its answer read on the caller's
// goroutine, over a pool of keep-alive connections, with net/http's own Request.Write and
// ReadResponse. http.Transport would hand each request to two goroutines per connection (its
// read and write loops) and back through channels, which on these hops costs more CPU than
// the syscalls themselves. Requests with a body, and upgrades (WebSocket), go to the full
// http.Transport (fallback), which streams both ways at once.
type appTransport struct {
	dial     func(ctx context.Context) (net.Conn, error)
	fallback http.RoundTripper
	// closeFallback closes the fallback's idle connections, when this transport owns it.
	closeFallback func()

	mu     sync.Mutex
	idle   []*appConn
	closed bool // CloseIdleConnections was called: no more pooling
}

// appConn is one keep-alive connection to the app.
type appConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
	// greeted: the stream has carried a request to a peer, which has checked its secret.
	greeted bool
}

// maxIdleApp bounds the pool of idle connections to the app.
const maxIdleApp = idleConns

// newAppTransport is the transport to one app instance on loopback. A failed connect is a
// dialError: the request never reached the app.
func newAppTransport(port int) *appTransport {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}
	dial := func(ctx context.Context) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, &dialError{err}
		}
		return c, nil
	}
	fallback := &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		MaxIdleConns:        idleConns,
		MaxIdleConnsPerHost: idleConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &appTransport{dial: dial, fallback: fallback, closeFallback: fallback.CloseIdleConnections}
}

// CloseIdleConnections closes every idle connection; later ones are closed after use.
func (t *appTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle, t.closed = nil, true
	t.mu.Unlock()
	for _, ac := range idle {
		ac.c.Close()
	}
	if t.closeFallback != nil {
		t.closeFallback()
	}
}

// get returns a pooled connection (reused = true) or, with fresh or an empty pool, a new one.
func (t *appTransport) get(ctx context.Context, fresh bool) (ac *appConn, reused bool, err error) {
	t.mu.Lock()
	if n := len(t.idle); n > 0 && !fresh {
		ac = t.idle[n-1]
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		return ac, true, nil
	}
	t.mu.Unlock()
	c, err := t.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	return &appConn{c: c, br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 4<<10)}, false, nil
}

func (t *appTransport) put(ac *appConn) {
	t.mu.Lock()
	if !t.closed && len(t.idle) < maxIdleApp {
		t.idle = append(t.idle, ac)
		ac = nil
	}
	t.mu.Unlock()
	if ac != nil {
		ac.c.Close()
	}
}

// RoundTrip implements http.RoundTripper.
func (t *appTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if (req.Body != nil && req.Body != http.NoBody) || req.ContentLength > 0 || req.Method == http.MethodConnect ||
		req.Header.Get("Upgrade") != "" {
		return t.fallback.RoundTrip(req)
	}
	var resp *http.Response
	err := t.exchange(req, func(ac *appConn) (err error) {
		resp, err = t.roundTrip(ac, req)
		return err
	})
	return resp, err
}

// exchange runs x, which sends req and reads the answer's header, on a pooled connection;
// x owns the connection once it succeeds and closes its deadline hook when it fails. A
// pooled connection the app closed while idle (or a stream of a peer that has restarted)
// fails before any answer (x's error is not errAnswerStarted): x runs once more on a new
// one, as http.Transport does.
func (t *appTransport) exchange(req *http.Request, x func(ac *appConn) error) error {
	var sent error // the first attempt's failure, when the app may have acted on the request
	for attempt := 0; ; attempt++ {
		ac, reused, err := t.get(req.Context(), attempt > 0)
		if err != nil {
			if sent != nil {
				// The app is gone, and it may have run the request before it went: not a
				// dialError, which would have the router repeat it on the replacement.
				return sent
			}
			return err
		}
		err = x(ac)
		if err == nil {
			return nil
		}
		ac.c.Close()
		if reused && attempt == 0 && req.Context().Err() == nil && !errors.Is(err, errAnswerStarted) {
			if !replayable(req) {
				sent = err
			}
			continue
		}
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return ctxErr
		}
		return err
	}
}

// errAnswerStarted marks a failure after the app began its answer: never retried.
var errAnswerStarted = errors.New("router: the app's answer broke off")

func (t *appTransport) roundTrip(ac *appConn, req *http.Request) (*http.Response, error) {
	// The request's context (client gone, answer timeout) interrupts the connection.
	stop := context.AfterFunc(req.Context(), func() { ac.c.SetDeadline(time.Unix(1, 0)) })
	if err := req.Write(ac.bw); err != nil {
		stop()
		return nil, err
	}
	if err := ac.bw.Flush(); err != nil {
		stop()
		return nil, err
	}
	return t.readAnswer(ac, req, stop)
}

// readAnswer reads the header of the app's answer to req from ac; its body returns ac to
// the pool, or closes it, and calls stop. A failure calls stop.
func (t *appTransport) readAnswer(ac *appConn, req *http.Request, stop func() bool) (*http.Response, error) {
	resp, err := http.ReadResponse(ac.br, req)
	// Interim answers (103 Early Hints, 100 Continue) are dropped; the final one follows.
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		resp, err = http.ReadResponse(ac.br, req)
	}
	if err != nil {
		stop()
		if resp != nil || ac.br.Buffered() > 0 {
			err = errors.Join(errAnswerStarted, err)
		}
		return nil, err
	}
	keep := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols &&
		!strings.EqualFold(resp.Header.Get("Connection"), "close")
	resp.Body = &appBody{rc: resp.Body, ac: ac, t: t, stop: stop, keep: keep, eof: resp.Body == http.NoBody}
	return resp, nil
}

// appBody returns its connection to the pool once the answer has been read to its end.
type appBody struct {
	rc   io.ReadCloser
	ac   *appConn
	t    *appTransport
	stop func() bool
	keep bool
	once sync.Once
	eof  bool
}

func (b *appBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
		b.release()
	}
	return n, err
}

func (b *appBody) Close() error {
	b.release()
	return nil
}

func (b *appBody) release() {
	b.once.Do(func() {
		b.rc.Close()
		// stop reports false when the context already fired and poisoned the deadline.
		if b.stop() && b.eof && b.keep {
			b.t.put(b.ac)
			return
		}
		b.ac.c.Close()
	})
}
