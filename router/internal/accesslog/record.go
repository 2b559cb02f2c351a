package accesslog

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// What one request records for the log: the router fills an Entry (the route and worker it
// chose, the key as --key-stats shows it), and a Writer wrapping the request's
// ResponseWriter sees the status and bytes of the answer and the app's share of its time.

// HeaderAppTime is, between routers only, the owner's app time (microseconds) on the answer
// to a forwarded request that the accepting router logs; the accepting router takes it out
// of the answer.
const HeaderAppTime = "X-Olio-App-Time"

// Writer wraps a request's ResponseWriter while the access log is on: it records the
// status, the bytes written and when the app answered. On the private side (Peer), it
// passes the owner's app time back to the accepting router in a header instead.
type Writer struct {
	http.ResponseWriter
	// Peer: the owner's side of a forwarded request: send the app's time back.
	Peer bool
	// Remote: forwarded, the owner asked for its app's time: take it from the answer.
	Remote bool

	status   int
	out      int64
	appStart time.Time // the request was handed to the app
	appEnd   time.Time // the app's response header came (or the embedded handler answered)
	appTime  time.Duration
	hasApp   bool
	hijacked bool
	// handoverEnded: an upgraded connection that a hand-over ended (its key moved)
	handoverEnded bool
}

// StartApp marks the request as handed to the app, when w is (or wraps) a Writer.
func StartApp(w http.ResponseWriter) {
	for w != nil {
		if aw, ok := w.(*Writer); ok {
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

func (w *Writer) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
		w.answered()
	}
	w.ResponseWriter.WriteHeader(code)
}

// answered records the app's time when the answer begins.
func (w *Writer) answered() {
	h := w.ResponseWriter.Header()
	if !w.appStart.IsZero() {
		w.appEnd = time.Now()
		w.appTime, w.hasApp = w.appEnd.Sub(w.appStart), true
		if w.Peer {
			h[HeaderAppTime] = []string{strconv.FormatInt(w.appTime.Microseconds(), 10)}
		}
	}
	if v, ok := h[HeaderAppTime]; ok && w.Remote {
		// The owner's app time, on a forwarded answer: take it, never pass it on.
		delete(h, HeaderAppTime)
		if us, err := strconv.ParseInt(v[0], 10, 64); err == nil && len(v) == 1 {
			w.appTime, w.hasApp = time.Duration(us)*time.Microsecond, true
		}
	}
}

func (w *Writer) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		w.answered()
	}
	n, err := w.ResponseWriter.Write(p)
	w.out += int64(n)
	return n, err
}

// ReadFrom keeps the server's sendfile path for an embedded handler that copies a file.
func (w *Writer) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		w.answered()
	}
	n, err := io.Copy(w.ResponseWriter, src)
	w.out += n
	return n, err
}

// Flush passes a flush on (streamed answers, server-sent events).
func (w *Writer) Flush() {
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack passes the connection on (WebSocket): the line is written when the handler
// returns, once the upgraded connection has closed.
func (w *Writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
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
func (w *Writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// EndedByHandover marks the request, an upgraded connection, as ended by a hand-over (its
// key moved).
func (w *Writer) EndedByHandover() { w.handoverEnded = true }

// CountBody makes req's body, if any, count the bytes read from it into *n.
func CountBody(req *http.Request, n *int64) {
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = countingBody{req.Body, n}
	}
}

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

// Finish completes e, begun when the request came, from the answer w saw: the status,
// the bytes written, the app's share of the time, an upgrade and its end, and the whole
// time from e.Start to now.
func (w *Writer) Finish(e *Entry) {
	e.Total = time.Since(e.Start)
	e.Status, e.Out, e.Upgraded, e.Ended = w.status, w.out, w.hijacked, w.handoverEnded
	if e.Status == 0 {
		e.Status = http.StatusOK // the handler wrote nothing: net/http answers 200
	}
	if w.hasApp {
		e.App = w.appTime
	} else if !w.appStart.IsZero() && !w.hijacked {
		e.App = time.Since(w.appStart) // the app returned without answering: net/http's 200
	}
}
