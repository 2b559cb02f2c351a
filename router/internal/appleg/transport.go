package appleg

import (
	"context"
	"errors"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/olio-dev/olio/router/internal/connpool"
	"github.com/olio-dev/olio/router/internal/httprules"
)

// Leg is the app leg. Its fields are what it needs from the router above it; the zero Leg
// works (no hooks, errors to log's standard logger).
type Leg struct {
	// ErrorLog logs an app's answer that broke off mid-body (nil: log's standard logger).
	ErrorLog *log.Logger
	// Answered, if set, is called once the head of the app's final answer to req (not a
	// 101, which Serve returns) has come, before it is written, with its status.
	Answered func(req *http.Request, status int)
	// ClientBody, if set, wraps the client's body as it is read to be sent on; BodyBroke, if
	// set, reports whether an error of that body's is the client's body breaking (a bad
	// chunk, a deadline): the app's connection is then closed and Serve returns the error.
	ClientBody func(io.ReadCloser) io.Reader
	BodyBroke  func(error) bool
}

func (l *Leg) logf(format string, args ...any) {
	if l.ErrorLog != nil {
		l.ErrorLog.Printf(format, args...)
		return
	}
	log.Printf(format, args...)
}

// App is the way to one app instance listening on loopback: its pool of keep-alive
// connections. The app leg's engine (Leg.Serve) writes and reads on the caller's goroutine;
// http.Transport would hand each request to two goroutines per connection (its read and
// write loops) and back through channels, which on these hops costs more CPU than the
// syscalls themselves. Its RoundTrip serves olio's own requests to the app (the hand-over
// notice).
type App struct {
	port int
	pool connpool.Pool
}

// New is the way to the app instance listening on 127.0.0.1:port. A failed connect is a
// *DialError: the request never reached the app.
func New(port int) *App {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}
	a := &App{port: port}
	a.pool.Dial = func(ctx context.Context) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, &DialError{err}
		}
		return c, nil
	}
	return a
}

// DialError marks a failure to connect to the app: the request never reached it, so it can
// be retried on the app's replacement.
type DialError struct{ Err error }

func (e *DialError) Error() string { return e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// CloseIdleConnections closes every idle connection; later ones are closed after use.
func (a *App) CloseIdleConnections() { a.pool.CloseIdleConnections() }

// RoundTrip implements http.RoundTripper for olio's own short requests to the app (a body
// is written whole before the answer is read; no upgrades).
func (a *App) RoundTrip(req *http.Request) (*http.Response, error) {
	var resp *http.Response
	err := a.pool.Exchange(req, func(ac *connpool.Conn) (err error) {
		resp, err = a.roundTrip(ac, req)
		return err
	})
	return resp, err
}

func (a *App) roundTrip(ac *connpool.Conn, req *http.Request) (*http.Response, error) {
	// The request's context (client gone, answer timeout) interrupts the connection.
	stop := context.AfterFunc(req.Context(), func() { ac.Conn.SetDeadline(time.Unix(1, 0)) })
	if err := req.Write(ac.W); err != nil {
		stop()
		return nil, err
	}
	if err := ac.W.Flush(); err != nil {
		stop()
		return nil, err
	}
	return a.readAnswer(ac, req, stop, nil) // interim answers to olio's own requests are dropped
}

// readAnswer reads the header of the app's answer to req from ac; its body returns ac to
// the pool, or closes it, and calls stop. A failure calls stop. Interim answers (103 Early
// Hints, 100 Continue) go to interim (nil: dropped), at most httprules.MaxInterim; the final
// one follows.
func (a *App) readAnswer(ac *connpool.Conn, req *http.Request, stop func() bool, interim func(*http.Response)) (*http.Response, error) {
	ac.Limit(connpool.MaxAnswerHeader)
	resp, err := http.ReadResponse(ac.R, req)
	for n := 0; err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols; n++ {
		if n == httprules.MaxInterim {
			resp, err = nil, errors.Join(connpool.ErrAnswerStarted, httprules.ErrTooManyInterim)
			break
		}
		if interim != nil {
			interim(resp)
		}
		resp, err = http.ReadResponse(ac.R, req)
	}
	ac.Limit(math.MaxInt64)
	if err != nil {
		stop()
		if resp != nil || ac.R.Buffered() > 0 {
			err = errors.Join(connpool.ErrAnswerStarted, err)
		}
		return nil, err
	}
	keep := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols &&
		!strings.EqualFold(resp.Header.Get("Connection"), "close")
	resp.Body = &appBody{rc: resp.Body, ac: ac, pool: &a.pool, stop: stop, keep: keep, eof: resp.Body == http.NoBody}
	return resp, nil
}

// appBody returns its connection to the pool once the answer has been read to its end.
type appBody struct {
	rc   io.ReadCloser
	ac   *connpool.Conn
	pool *connpool.Pool
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
			b.ac.Conn.Close()
		}
		b.rc.Close()
		// stop reports false when the context already fired and poisoned the deadline.
		if b.stop() && b.eof && b.keep {
			b.pool.Put(b.ac)
			return
		}
		b.ac.Conn.Close()
	})
}

// bufferPool shares copy buffers between requests.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) put(v []byte) { b.p.Put(&v) }

var buffers = &bufferPool{}
