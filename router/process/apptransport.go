package process

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// appTransport is the pool of keep-alive connections from a router to its own app over
// loopback (it also keeps peerTransport's streams to one peer): bounded, checked quiet
// before reuse, with exchange's retry rule. The app leg's engine (serveApp) writes and reads
// on the caller's goroutine; http.Transport would hand each request to two goroutines per
// connection (its read and write loops) and back through channels, which on these hops
// costs more CPU than the syscalls themselves. Its RoundTrip serves olio's own requests to
// the app (the hand-over notice).
type appTransport struct {
	dial func(ctx context.Context) (net.Conn, error)

	// maxIdle bounds the idle connections kept (0: maxIdleApp); idleTimeout closes one
	// idle for longer (0: appIdleTimeout). now is the clock (nil: time.Now).
	maxIdle     int
	idleTimeout time.Duration
	now         func() time.Time

	mu     sync.Mutex
	idle   []*appConn  // oldest first: put appends, get takes the newest
	reaper *time.Timer // closes the idle connections past idleTimeout; nil when none are idle
	closed bool        // CloseIdleConnections was called: no more pooling
}

// appConn is one keep-alive connection to the app.
type appConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
	// peerVersion is the peer protocol version a stream to a peer was greeted in (0: not
	// yet); peerReply: the owner's reply to that hello is still to be read.
	peerVersion int
	peerReply   bool
	// idleSince is when it went back to the pool.
	idleSince time.Time
	// raw is the socket under c, for quiet (nil: not a socket, as a peer's stream); peek is
	// quiet's look at it, made once so that a reuse allocates nothing.
	raw  syscall.RawConn
	peek *peeker
	// lim bounds what br may read from c (nil: unbounded).
	lim *limitReader
}

// maxAnswerHeader bounds the header of an app's answer (interim answers included), as
// http.Transport's MaxResponseHeaderBytes does by default.
const maxAnswerHeader = 10 << 20

// errAnswerHeaderTooLarge is an answer header past maxAnswerHeader.
var errAnswerHeaderTooLarge = errors.New("router: the app's answer header is larger than 10 MiB")

// limitReader reads from r until left bytes have been read, then fails.
type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errAnswerHeaderTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// limit sets how much more br may read from the connection.
func (ac *appConn) limit(n int64) {
	if ac.lim != nil {
		ac.lim.left = n
	}
}

// The bounds of each pool: a burst leaves at most maxIdleApp idle connections, and none
// stays idle longer than appIdleTimeout (the app's own keep-alive timeout may be shorter:
// a connection the app closed is noticed before it is used, by quiet).
const (
	maxIdleApp     = 64
	appIdleTimeout = 30 * time.Second
)

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
	return &appTransport{dial: dial}
}

// CloseIdleConnections closes every idle connection; later ones are closed after use.
func (t *appTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle, t.closed = nil, true
	if t.reaper != nil {
		t.reaper.Stop()
		t.reaper = nil
	}
	t.mu.Unlock()
	for _, ac := range idle {
		ac.c.Close()
	}
}

// get returns a pooled connection (reused = true) or, with fresh or an empty pool, a new one.
// A pooled connection that is not quiet (the app sent something, or closed it, while it was
// idle) or idle too long is closed, never used.
func (t *appTransport) get(ctx context.Context, fresh bool) (ac *appConn, reused bool, err error) {
	for !fresh {
		t.mu.Lock()
		n := len(t.idle)
		if n == 0 {
			t.mu.Unlock()
			break
		}
		ac = t.idle[n-1]
		t.idle[n-1] = nil
		t.idle = t.idle[:n-1]
		expired := t.clock().Sub(ac.idleSince) >= t.timeout()
		t.mu.Unlock()
		if !expired && quiet(ac) {
			return ac, true, nil
		}
		ac.c.Close()
	}
	c, err := t.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	lim := &limitReader{r: c, left: math.MaxInt64}
	ac = &appConn{c: c, br: bufio.NewReaderSize(lim, 16<<10), bw: bufio.NewWriterSize(c, 4<<10), lim: lim}
	if sc, ok := c.(syscall.Conn); ok {
		if ac.raw, _ = sc.SyscallConn(); ac.raw != nil {
			ac.peek = &peeker{}
			ac.peek.fn = ac.peek.look
		}
	}
	return ac, false, nil
}

// put returns ac to the pool once its answer has been read to the end. A connection with
// bytes past that answer is closed: they are not the answer to anything this router sent.
func (t *appTransport) put(ac *appConn) {
	if ac.br.Buffered() > 0 {
		ac.c.Close()
		return
	}
	t.mu.Lock()
	limit := t.maxIdle
	if limit <= 0 {
		limit = maxIdleApp
	}
	if !t.closed && len(t.idle) < limit {
		ac.idleSince = t.clock()
		t.idle = append(t.idle, ac)
		if t.reaper == nil {
			t.reaper = time.AfterFunc(t.timeout(), t.reap)
		}
		ac = nil
	}
	t.mu.Unlock()
	if ac != nil {
		ac.c.Close()
	}
}

// reap closes the connections idle for idleTimeout or longer, and sets itself to run again
// when the next one will be.
func (t *appTransport) reap() {
	t.mu.Lock()
	now, timeout := t.clock(), t.timeout()
	k := 0
	for k < len(t.idle) && now.Sub(t.idle[k].idleSince) >= timeout {
		k++
	}
	old := make([]*appConn, k)
	copy(old, t.idle[:k])
	t.idle = append(t.idle[:0], t.idle[k:]...)
	clear(t.idle[len(t.idle):cap(t.idle)])
	if t.reaper != nil {
		if len(t.idle) == 0 {
			t.reaper.Stop()
			t.reaper = nil
		} else {
			t.reaper.Reset(timeout - now.Sub(t.idle[0].idleSince))
		}
	}
	t.mu.Unlock()
	for _, ac := range old {
		ac.c.Close()
	}
}

func (t *appTransport) clock() time.Time {
	if t.now != nil {
		return t.now()
	}
	return time.Now()
}

func (t *appTransport) timeout() time.Duration {
	if t.idleTimeout > 0 {
		return t.idleTimeout
	}
	return appIdleTimeout
}

// quiet reports whether nothing can be read from an idle connection: no byte buffered and,
// on a socket, none waiting and no end of stream (one non-blocking MSG_PEEK). Anything there
// was sent by the app while no request was outstanding — stray bytes after an answer, or the
// close of an idle connection — and makes the connection unfit for the next request.
func quiet(ac *appConn) bool {
	if ac.br.Buffered() > 0 {
		return false
	}
	if ac.raw == nil {
		return true // a peer's stream: its frames delimit every answer
	}
	ac.peek.still = false
	err := ac.raw.Read(ac.peek.fn)
	return err == nil && ac.peek.still
}

// peeker is quiet's non-blocking MSG_PEEK on one connection's socket.
type peeker struct {
	b     [1]byte
	still bool               // nothing to read, and not closed
	fn    func(uintptr) bool // look, as a value made once
}

func (p *peeker) look(fd uintptr) bool {
	_, _, err := unix.Recvfrom(int(fd), p.b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	p.still = err == unix.EAGAIN || err == unix.EWOULDBLOCK
	return true
}

// RoundTrip implements http.RoundTripper for olio's own short requests to the app (a body
// is written whole before the answer is read; no upgrades).
func (t *appTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var resp *http.Response
	err := t.exchange(req, func(ac *appConn) (err error) {
		resp, err = t.roundTrip(ac, req)
		return err
	})
	return resp, err
}

// exchange runs x, which sends req and reads the answer's header, on a pooled connection;
// x owns the connection once it succeeds and closes its deadline hook when it fails. When a
// pooled connection fails before any answer (x's error is not errAnswerStarted: the app
// closed it just as it was taken, or a peer's stream whose router has restarted), a request
// that is replayable runs once more on a new one, as http.Transport does; any other could
// have run already and fails.
func (t *appTransport) exchange(req *http.Request, x func(ac *appConn) error) error {
	for attempt := 0; ; attempt++ {
		ac, reused, err := t.get(req.Context(), attempt > 0)
		if err != nil {
			return err
		}
		err = x(ac)
		if err == nil {
			return nil
		}
		ac.c.Close()
		// The app may have run a request that reached it before the connection failed: only
		// one that may run twice is sent again (replayable, http.Transport's rule).
		if reused && attempt == 0 && req.Context().Err() == nil && !errors.Is(err, errAnswerStarted) && replayable(req) {
			continue
		}
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return ctxErr
		}
		return err
	}
}

// errTooManyInterim is an app sending more than maxInterim interim answers.
var errTooManyInterim = errors.New("router: too many 1xx informational answers")

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
	return t.readAnswer(ac, req, stop, nil) // interim answers to olio's own requests are dropped
}

// maxInterim bounds the interim answers before the final one, as http.Transport's.
const maxInterim = 5

// readAnswer reads the header of the app's answer to req from ac; its body returns ac to
// the pool, or closes it, and calls stop. A failure calls stop. Interim answers (103 Early
// Hints, 100 Continue) go to interim (nil: dropped), at most maxInterim; the final one follows.
func (t *appTransport) readAnswer(ac *appConn, req *http.Request, stop func() bool, interim func(*http.Response)) (*http.Response, error) {
	ac.limit(maxAnswerHeader)
	resp, err := http.ReadResponse(ac.br, req)
	for n := 0; err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols; n++ {
		if n == maxInterim {
			resp, err = nil, errors.Join(errAnswerStarted, errTooManyInterim)
			break
		}
		if interim != nil {
			interim(resp)
		}
		resp, err = http.ReadResponse(ac.br, req)
	}
	ac.limit(math.MaxInt64)
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
		if !b.eof {
			// Left before its end (the client went, a fan-out's cut): net/http's Close
			// would read the rest of the answer to keep the connection; close it first.
			b.ac.c.Close()
		}
		b.rc.Close()
		// stop reports false when the context already fired and poisoned the deadline.
		if b.stop() && b.eof && b.keep {
			b.t.put(b.ac)
			return
		}
		b.ac.c.Close()
	})
}
