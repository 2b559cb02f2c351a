// Package connpool keeps a router's keep-alive connections to one destination — its app
// over loopback, or a peer over its mux session — for reuse: a bounded set of idle
// connections, each checked quiet before it is reused, closed by an idle reaper, with the
// rule that decides when a request that failed on a reused connection is sent again.
package connpool

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Pool is a pool of keep-alive connections to one destination: bounded, checked quiet
// before reuse, with Exchange's retry rule. A Pool with Dial set is ready to use; its other
// fields may be left zero.
type Pool struct {
	// Dial opens a new connection.
	Dial func(ctx context.Context) (net.Conn, error)

	// MaxIdle bounds the idle connections kept (0: DefaultMaxIdle); IdleTimeout closes one
	// idle for longer (0: DefaultIdleTimeout). Now is the clock (nil: time.Now).
	MaxIdle     int
	IdleTimeout time.Duration
	Now         func() time.Time

	mu     sync.Mutex
	idle   []*Conn     // oldest first: Put appends, Get takes the newest
	reaper *time.Timer // closes the idle connections past IdleTimeout; nil when none are idle
	closed bool        // CloseIdleConnections was called: no more pooling
}

// Conn is one keep-alive connection of a pool.
type Conn struct {
	Conn net.Conn
	R    *bufio.Reader // reads Conn, at most what Limit allows
	W    *bufio.Writer // writes Conn

	// Extra is the pool user's own state for this connection, kept while it is pooled (nil
	// until the user sets it).
	Extra any

	// idleSince is when it went back to the pool.
	idleSince time.Time
	// raw is the socket under Conn, for quiet (nil: not a socket, as a peer's stream);
	// peek is quiet's look at it, made once so that a reuse allocates nothing.
	raw  syscall.RawConn
	peek *peeker
	// lim bounds what R may read from Conn (nil: unbounded).
	lim *limitReader
}

// newConn wraps c as a pool's connection.
func newConn(c net.Conn) *Conn {
	lim := &limitReader{r: c, left: math.MaxInt64}
	ac := &Conn{Conn: c, R: bufio.NewReaderSize(lim, 16<<10), W: bufio.NewWriterSize(c, 4<<10), lim: lim}
	if sc, ok := c.(syscall.Conn); ok {
		if ac.raw, _ = sc.SyscallConn(); ac.raw != nil {
			ac.peek = &peeker{}
			ac.peek.fn = ac.peek.look
		}
	}
	return ac
}

// MaxAnswerHeader bounds the header of an answer (interim answers included), as
// http.Transport's MaxResponseHeaderBytes does by default.
const MaxAnswerHeader = 10 << 20

// ErrAnswerHeaderTooLarge is a read past a Limit of MaxAnswerHeader.
var ErrAnswerHeaderTooLarge = errors.New("router: the app's answer header is larger than 10 MiB")

// limitReader reads from r until left bytes have been read, then fails.
type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, ErrAnswerHeaderTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// Limit sets how much more R may read from the connection (math.MaxInt64: no bound).
func (ac *Conn) Limit(n int64) {
	if ac.lim != nil {
		ac.lim.left = n
	}
}

// The default bounds of a pool: a burst leaves at most DefaultMaxIdle idle connections, and
// none stays idle longer than DefaultIdleTimeout (the app's own keep-alive timeout may be
// shorter: a connection the app closed is noticed before it is used, by quiet).
const (
	DefaultMaxIdle     = 64
	DefaultIdleTimeout = 30 * time.Second
)

// CloseIdleConnections closes every idle connection; later ones are closed after use.
func (t *Pool) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle, t.closed = nil, true
	if t.reaper != nil {
		t.reaper.Stop()
		t.reaper = nil
	}
	t.mu.Unlock()
	for _, ac := range idle {
		ac.Conn.Close()
	}
}

// Idle returns the idle connections, oldest first, without taking them out of the pool.
func (t *Pool) Idle() []*Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]*Conn(nil), t.idle...)
}

// Get returns a pooled connection (reused = true) or, with fresh or an empty pool, a new one.
// A pooled connection that is not quiet (the other side sent something, or closed it, while
// it was idle) or idle too long is closed, never used.
func (t *Pool) Get(ctx context.Context, fresh bool) (ac *Conn, reused bool, err error) {
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
		ac.Conn.Close()
	}
	c, err := t.Dial(ctx)
	if err != nil {
		return nil, false, err
	}
	return newConn(c), false, nil
}

// Put returns ac to the pool once its answer has been read to the end. A connection with
// bytes past that answer is closed: they are not the answer to anything this router sent.
func (t *Pool) Put(ac *Conn) {
	if ac.R.Buffered() > 0 {
		ac.Conn.Close()
		return
	}
	t.mu.Lock()
	limit := t.MaxIdle
	if limit <= 0 {
		limit = DefaultMaxIdle
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
		ac.Conn.Close()
	}
}

// reap closes the connections idle for IdleTimeout or longer, and sets itself to run again
// when the next one will be.
func (t *Pool) reap() {
	t.mu.Lock()
	now, timeout := t.clock(), t.timeout()
	k := 0
	for k < len(t.idle) && now.Sub(t.idle[k].idleSince) >= timeout {
		k++
	}
	old := make([]*Conn, k)
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
		ac.Conn.Close()
	}
}

func (t *Pool) clock() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

func (t *Pool) timeout() time.Duration {
	if t.IdleTimeout > 0 {
		return t.IdleTimeout
	}
	return DefaultIdleTimeout
}

// quiet reports whether nothing can be read from an idle connection: no byte buffered and,
// on a socket, none waiting and no end of stream (one non-blocking MSG_PEEK). Anything there
// was sent by the other side while no request was outstanding — stray bytes after an
// answer, or the close of an idle connection — and makes the connection unfit for the next
// request.
func quiet(ac *Conn) bool {
	if ac.R.Buffered() > 0 {
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

// ErrAnswerStarted marks a failure after the other side began its answer: never retried.
var ErrAnswerStarted = errors.New("router: the app's answer broke off")

// Exchange runs x, which sends req and reads the answer's header, on a pooled connection;
// x owns the connection once it succeeds and closes its deadline hook when it fails. When a
// pooled connection fails before any answer (x's error is not ErrAnswerStarted: the app
// closed it just as it was taken), a request that is Replayable runs once more on a new
// one, as http.Transport does; any other could have run already and fails.
func (t *Pool) Exchange(req *http.Request, x func(ac *Conn) error) error {
	for attempt := 0; ; attempt++ {
		ac, reused, err := t.Get(req.Context(), attempt > 0)
		if err != nil {
			return err
		}
		err = x(ac)
		if err == nil {
			return nil
		}
		ac.Conn.Close()
		// The app may have run a request that reached it before the connection failed: only
		// one that may run twice is sent again (Replayable, http.Transport's rule).
		if reused && attempt == 0 && req.Context().Err() == nil && !errors.Is(err, ErrAnswerStarted) && Replayable(req) {
			continue
		}
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return ctxErr
		}
		return err
	}
}

// Replayable reports whether a request may be sent again, by http.Transport's rule: no body,
// and an idempotent method or an idempotency key the app can recognise a repeat by.
func Replayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}
