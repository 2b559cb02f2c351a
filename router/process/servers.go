package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// The limits of the two HTTP servers a router runs, in one place. What net/http does with
// them, checked end to end in test/hostile_test.go:
//
//   - a request header over --max-header-bytes gets 431 and the connection is closed
//     (headerTooLarge);
//   - a malformed request line or header, or several Content-Length headers that disagree,
//     gets 400; a Transfer-Encoding other than a single "chunked" gets 501;
//   - a request with both Transfer-Encoding: chunked and Content-Length is framed by the
//     chunked encoding alone and its Content-Length dropped (RFC 9112 §6.3); the router then
//     frames the request anew on every leg it sends it down (peer, app), so what the app
//     reads as one request is exactly what the router parsed as one: nothing can be
//     smuggled across the forwarding hop. Its connection is closed after the answer, as is
//     that of an HTTP/1.0 request with Transfer-Encoding (RFC 9112 §6.1; framingConn).
const (
	// DefaultHeaderTimeout bounds reading a request's header on the public side: a
	// slow-loris client holds a connection (and, with --max-conns, a slot) at most this long.
	// It is --header-timeout's default, and the bound when a Config leaves it 0.
	DefaultHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout closes a client's keep-alive connection idle this long: it is
	// --idle-timeout's default, and the public side's when a Config leaves it 0.
	DefaultIdleTimeout = 2 * time.Minute
	// peerHeaderSlack is added to the peer side's header limit: a forwarded request carries
	// X-Forwarded-* on top of what the public side accepted, and its head's own fields.
	peerHeaderSlack = 8 << 10
)

// newPublicServer is the http.Server of the public side, serving h with the header limit
// of cfg.
func (r *Router) newPublicServer(h http.Handler) *http.Server {
	cfg := r.conf()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    publicHeaderBytes(cfg.MaxHeaderBytes),
		ErrorLog:          r.errorLog,
		ConnState:         liftWriteDeadline,
	}
}

// headerSlop is what net/http reads past MaxHeaderBytes before it answers 431 ("bufio
// slop"): the public server is given the limit less this, so that its hard limit is
// --max-header-bytes itself.
const headerSlop = 4096

// publicHeaderBytes is the public server's MaxHeaderBytes for --max-header-bytes limit (0:
// net/http's default).
func publicHeaderBytes(limit int) int {
	if limit <= 0 {
		return 0
	}
	return max(limit-headerSlop, 1)
}

// headerTooLarge answers 431, and closes the connection, when req's request line and header
// fields come to more than --max-header-bytes. net/http's own limit (newPublicServer) is
// exact for the first request on a connection and for limits above headerSlop; this
// catches the rest (a pipelined request, part of whose header net/http had read with the
// one before; a limit under 4 KiB), counting the fields as parsed (whitespace that net/http
// trims is not counted). The limit is the router's, the same for every key, whichever
// worker serves it.
func (r *Router) headerTooLarge(w http.ResponseWriter, req *http.Request) bool {
	limit := r.conf().MaxHeaderBytes
	if limit <= 0 {
		return false // net/http's default applies
	}
	if info, _ := req.Context().Value(connInfoKey{}).(*connInfo); info != nil && info.handedIn && info.requests.Load() == 1 {
		return false // checked by the router that handed the connection over, before it re-wrote the request
	}
	n := len(req.Method) + 1 + len(req.RequestURI) + 1 + len(req.Proto) + 2 + 2
	if req.Host != "" {
		n += len("Host: ") + len(req.Host) + 2
	}
	for k, vs := range req.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	if n <= limit {
		return false
	}
	w.Header().Set("Connection", "close")
	r.fail(w, http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("olio: the request header is larger than %d bytes (--max-header-bytes)", limit))
	return true
}

// limitConns bounds the connections ln has open at once to n (--max-conns); n <= 0 means no
// bound. Past the bound Accept waits, so new connections queue in the shared socket's
// backlog, where another router can take them.
func limitConns(ln net.Listener, n int) net.Listener {
	if n <= 0 {
		return ln
	}
	return newLimitListener(ln, n)
}

// clientBody marks errors reading a client's request body, so that a broken body (a bad
// chunk, a connection cut short) is answered 400, the client's fault, and not 502.
type clientBody struct{ io.ReadCloser }

func (b clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = &bodyError{err}
	}
	return n, err
}

// bodyError is an error reading the client's request body while sending it on.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// markBody wraps the body of a proxy's outgoing request (in Rewrite) in a clientBody.
func markBody(out *http.Request) {
	if out.Body != nil && out.Body != http.NoBody {
		out.Body = clientBody{out.Body}
	}
}

// failBody answers a request whose body could not be read, if err (or its body's
// deadline, timedBody) says so: 408 when it did not arrive within --body-timeout, else
// 400.
func (r *Router) failBody(w http.ResponseWriter, req *http.Request, err error) bool {
	if bodyTimedOut(req) || errors.Is(err, errBodyTimeout) {
		w.Header().Set("Connection", "close")
		r.fail(w, http.StatusRequestTimeout, fmt.Sprintf("olio: the request body did not arrive within --body-timeout (%s, plus a second per %d KiB received)",
			r.conf().BodyTimeout, bodyRate>>10))
		return true
	}
	var be *bodyError
	if !errors.As(err, &be) {
		return false
	}
	r.fail(w, http.StatusBadRequest, "olio: "+be.Error())
	return true
}

// errAppTimeout is the cause of a request's cancellation when its app did not answer (send
// its response header) within --request-timeout.
var errAppTimeout = fmt.Errorf("router: the app did not answer in time: %w", context.DeadlineExceeded)

// answerTimerKey keys the timer of withAnswerTimeout in a request's context.
type answerTimerKey struct{}

// withAnswerTimeout bounds the wait for the app's response header to d: past it, the
// request's context is cancelled with errAppTimeout, so the app's request is cancelled and
// the client gets 504. Once the header has come (answered), the body and an upgraded
// connection (WebSocket) run on unbounded. stop releases the timer and the context.
func withAnswerTimeout(req *http.Request, d time.Duration) (_ *http.Request, stop func()) {
	ctx, cancel := context.WithCancelCause(req.Context())
	t := time.AfterFunc(d, func() { cancel(errAppTimeout) })
	ctx = context.WithValue(ctx, answerTimerKey{}, t)
	return req.WithContext(ctx), func() {
		t.Stop()
		cancel(nil)
	}
}

// answered is the local proxy's ModifyResponse: the app's response header has come, so its
// answer timeout stops; a 101 marks the request as an upgraded connection (upgrade).
func answered(resp *http.Response) error {
	if t, ok := resp.Request.Context().Value(answerTimerKey{}).(*time.Timer); ok {
		t.Stop()
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if u, ok := resp.Request.Context().Value(upgradeKey{}).(*upgrade); ok {
			u.begin()
		}
		tunnelUpgrade(resp) // a hand-over can end it
	}
	return nil
}

// timedOut returns errAppTimeout if req was cancelled by its answer timeout, else err.
func timedOut(req *http.Request, err error) error {
	if errors.Is(context.Cause(req.Context()), errAppTimeout) {
		return errAppTimeout
	}
	return err
}
