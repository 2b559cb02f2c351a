package process

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// Bounding a slow client past its header (--body-timeout). --header-timeout bounds how long
// a client takes to send a request's header; without more, a client that then sends its
// body a byte a second, or never reads its answer, holds its connection (and, with
// --max-conns, a slot) for as long as it likes. So, on the public side:
//
//   - a request's body must arrive within --body-timeout, extended by a second for every
//     bodyRate bytes received (a minimum rate, as Apache's mod_reqtimeout has it, so that a
//     large upload at a sane rate is not cut): past that, 408 and the connection is closed;
//   - every write of the answer to the client must complete within --body-timeout: a client
//     that stops reading has its connection closed.
//
// Both are counted (Stats.BodyTimeouts, Stats.WriteTimeouts).

// bodyRate is the minimum body rate, in bytes a second, past the first --body-timeout.
const bodyRate = 64 << 10

// errBodyTimeout is the cause of a failed body read whose deadline passed.
var errBodyTimeout = errors.New("router: the request body did not arrive in time")

// boundClient returns w and req bounded by --body-timeout (unchanged when it is 0).
func (r *Router) boundClient(w http.ResponseWriter, req *http.Request) (http.ResponseWriter, *http.Request) {
	d := r.conf().BodyTimeout
	if d <= 0 {
		return w, req
	}
	rc := http.NewResponseController(w)
	if req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0 {
		start := time.Now()
		if rc.SetReadDeadline(start.Add(d)) == nil {
			b := &timedBody{ReadCloser: req.Body, rc: rc, start: start, d: d, r: r}
			req = req.WithContext(context.WithValue(req.Context(), timedBodyKey{}, b))
			req.Body = b
		}
	}
	return &timedWriter{ResponseWriter: w, rc: rc, d: d, r: r}, req
}

// timedBody extends the read deadline as the body arrives, and lifts it at the end of the
// body (net/http then reads in the background to notice a client that goes away, and a
// deadline would cancel the request).
type timedBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	start   time.Time
	d       time.Duration
	r       *Router
	n       int64
	next    int64 // the byte count at which the deadline moves on
	expired atomic.Bool
	// over: the request has been served. A read still under way then (a body the app did
	// not wait for, read by a writer that has not heard yet) sets no deadline when it
	// returns: the connection may be serving the next request.
	over atomic.Bool
}

// timedBodyKey keys a request's timedBody in its context: net/http cancels the request's
// context when the body's read fails, so a proxy's error may be that cancellation rather
// than the timeout itself.
type timedBodyKey struct{}

// bodyTimedOut reports whether req's body did not arrive within --body-timeout.
func bodyTimedOut(req *http.Request) bool {
	b, ok := req.Context().Value(timedBodyKey{}).(*timedBody)
	return ok && b.expired.Load()
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if b.over.Load() {
		return n, err
	}
	if b.n >= b.next && err == nil {
		b.next = b.n + bodyRate
		b.rc.SetReadDeadline(b.start.Add(b.d + time.Duration(b.n/bodyRate)*time.Second))
	}
	switch {
	case err == io.EOF:
		b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		if !b.expired.Swap(true) {
			b.r.counters.bodyTimeouts.Add(1)
		}
		err = errors.Join(errBodyTimeout, err)
	}
	return n, err
}

// timedWriter bounds every write to the client, and lifts the bounds from a connection it
// hands over (Hijack: a WebSocket runs unbounded).
type timedWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	d       time.Duration
	r       *Router
	expired bool // a write timed out
}

func (w *timedWriter) Write(p []byte) (int, error) {
	w.rc.SetWriteDeadline(time.Now().Add(w.d))
	n, err := w.ResponseWriter.Write(p)
	w.timedOut(err)
	return n, err
}

// FlushError flushes the answer so far, within the bound.
func (w *timedWriter) FlushError() error {
	w.rc.SetWriteDeadline(time.Now().Add(w.d))
	err := http.NewResponseController(w.ResponseWriter).Flush()
	w.timedOut(err)
	return err
}

// timedOut counts a write that timed out, once per request (the failed write leaves the
// connection's writer failing).
func (w *timedWriter) timedOut(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) && !w.expired {
		w.expired = true
		w.r.counters.writeTimeouts.Add(1)
	}
}

// Hijack lifts both deadlines and hands the connection over (as a hijackedConn: a
// tunnel whose app side ends closes it rather than half-closing it).
func (w *timedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.rc.SetReadDeadline(time.Time{})
	w.rc.SetWriteDeadline(time.Time{})
	c, brw, err := w.rc.Hijack()
	if err != nil {
		return nil, nil, err
	}
	return hijackedConn{c}, brw, nil
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *timedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// liftWriteDeadline is the public server's ConnState hook: once an answer is complete (the
// connection is idle), its write deadline goes, so that net/http's own answers on the
// connection later (a 400 to a malformed request) are not cut by a stale one.
func liftWriteDeadline(c net.Conn, st http.ConnState) {
	if st == http.StateIdle {
		c.SetWriteDeadline(time.Time{})
	}
}
