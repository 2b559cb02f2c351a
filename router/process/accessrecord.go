package process

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router/internal/hotkeys"
)

// What one request records for the access log: the route and worker the handler chose, the
// key as --key-stats shows it, the status and bytes of the answer, and the app's share of
// its time. Nothing is recorded while the log is off.

// Between routers only: a forwarded request the accepting router logs carries
// headerTiming, and its owner answers with its app's time (microseconds) in headerAppTime,
// which the accepting router takes out of the answer.
const (
	headerTiming  = "X-Olio-Timing"
	headerAppTime = "X-Olio-App-Time"
)

// timedKey marks, in a forwarded request's context, that the owner should send its app's
// time back.
type timedKey struct{}

// accessWriter wraps a request's ResponseWriter while the access log is on: it records the
// status, the bytes written and when the app answered. On the private side (peer), it
// passes the owner's app time back to the accepting router in a header instead.
type accessWriter struct {
	http.ResponseWriter
	status   int
	out      int64
	appStart time.Time // the request was handed to the app
	appEnd   time.Time // the app's response header came (or the embedded handler answered)
	appTime  time.Duration
	hasApp   bool
	hijacked bool
	// handoverEnded: an upgraded connection that a hand-over ended (its key moved)
	handoverEnded bool
	peer          bool // the owner's side of a forwarded request: send the app's time back
	remote        bool // forwarded with headerTiming: take the owner's app time from the answer
}

// startApp marks the request as handed to the app, when w is (or wraps) an accessWriter.
func startApp(w http.ResponseWriter) {
	for w != nil {
		if aw, ok := w.(*accessWriter); ok {
			aw.appStart = time.Now()
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}

func (w *accessWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
		w.answered()
	}
	w.ResponseWriter.WriteHeader(code)
}

// answered records the app's time when the answer begins.
func (w *accessWriter) answered() {
	h := w.ResponseWriter.Header()
	if !w.appStart.IsZero() {
		w.appEnd = time.Now()
		w.appTime, w.hasApp = w.appEnd.Sub(w.appStart), true
		if w.peer {
			h[headerAppTime] = []string{strconv.FormatInt(w.appTime.Microseconds(), 10)}
		}
	}
	if v, ok := h[headerAppTime]; ok && w.remote {
		// The owner's app time, on a forwarded answer: take it, never pass it on.
		delete(h, headerAppTime)
		if us, err := strconv.ParseInt(v[0], 10, 64); err == nil && len(v) == 1 {
			w.appTime, w.hasApp = time.Duration(us)*time.Microsecond, true
		}
	}
}

func (w *accessWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		w.answered()
	}
	n, err := w.ResponseWriter.Write(p)
	w.out += int64(n)
	return n, err
}

// ReadFrom keeps the server's sendfile path for an embedded handler that copies a file.
func (w *accessWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		w.answered()
	}
	n, err := io.Copy(w.ResponseWriter, src)
	w.out += n
	return n, err
}

// Flush passes a flush on (streamed answers, server-sent events).
func (w *accessWriter) Flush() {
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack passes the connection on (WebSocket): the line is written when the handler
// returns, once the upgraded connection has closed.
func (w *accessWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
		if w.status == 0 {
			w.status = http.StatusSwitchingProtocols
		}
		if !w.appStart.IsZero() && !w.hasApp {
			w.appTime, w.hasApp = time.Since(w.appStart), true // the app said 101
		}
	}
	return c, brw, err
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *accessWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts the request body bytes read.
type countingBody struct {
	io.ReadCloser
	n *int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	*b.n += int64(n)
	return n, err
}

// accessLogging is the log state of one request on the public side.
type accessLogging struct {
	w      accessWriter
	e      accessEntry
	router *Router
	log    *accessLog
	skip   bool // handed off: the owner writes the line
}

// beginAccess starts the entry of a public request when the access log is on; nil when it
// is off.
func (r *Router) beginAccess(w http.ResponseWriter, req *http.Request) *accessLogging {
	l := r.alog.Load()
	if l == nil {
		return nil
	}
	a := &accessLogging{router: r, log: l}
	a.w.ResponseWriter = w
	a.e = accessEntry{
		start: time.Now(), client: req.RemoteAddr, method: req.Method, uri: req.RequestURI,
		proto: req.Proto, worker: r.index, route: RouteLocal, app: -1,
	}
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = countingBody{req.Body, &a.e.in}
	}
	if info, _ := req.Context().Value(connInfoKey{}).(*connInfo); info != nil && info.received {
		a.e.route = RouteHandedOff
	}
	return a
}

// setKey records the request's key as --key-stats shows it: as is (on), as its digest
// (hashed), or not at all (off).
func (a *accessLogging) setKey(h uint64, key string) {
	if a == nil {
		return
	}
	set := a.router.settings()
	switch set.cfg.KeyStats {
	case descend.KeyStatsOn:
		a.e.key, a.e.hasKey = key, true
	case descend.KeyStatsHashed:
		a.e.key, a.e.hasKey = hotkeys.KeyDigest(set.secret, h), true
	}
}

// route records where the request went.
func (a *accessLogging) route(route string, worker int) {
	if a != nil {
		a.e.route, a.e.worker = route, worker
	}
}

// forward marks the request as forwarded to its owner: ctx then asks the owner for its
// app's time.
func (a *accessLogging) forward(ctx context.Context) context.Context {
	if a == nil {
		return ctx
	}
	a.w.remote = true
	return context.WithValue(ctx, timedKey{}, true)
}

// end queues the entry. Deferred by ServeHTTP: it runs also when the proxy panics with
// http.ErrAbortHandler (the client went away mid-answer).
func (a *accessLogging) end() {
	if a == nil || a.skip {
		return
	}
	e := &a.e
	e.total = time.Since(e.start)
	e.status, e.out, e.upgraded, e.ended = a.w.status, a.w.out, a.w.hijacked, a.w.handoverEnded
	if e.status == 0 {
		e.status = http.StatusOK // the handler wrote nothing: net/http answers 200
	}
	if a.w.hasApp {
		e.app = a.w.appTime
	} else if !a.w.appStart.IsZero() && !a.w.hijacked {
		e.app = time.Since(a.w.appStart) // the app returned without answering: net/http's 200
	}
	a.log.add(e)
}
