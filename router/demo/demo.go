// Package demo is olio's built-in demo app: the handler `olio demo` serves on $PORT, which
// `olio serve` runs when no APP is given, and which the embedded example (cmd/olio-demo)
// serves in-process through router.Serve, so that both modes run identical app code. Every
// answer is a JSON object naming the worker that served it:
//
//	{"index": 3, "pid": 4242, "method": "GET", "path": "/x",
//	 "headers": {"User-Agent": "curl/8.5.0", ...}, "body_bytes": 0}
//
// Query parameters shape the answer: ?sleep=MS delays it (the request body is read first),
// ?status=CODE sets its status. /ws is a WebSocket echo.
package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/olio-dev/olio/monitor"
)

const (
	// demoShutdownTimeout bounds the wait for in-flight requests after ctx is done; it is below
	// the supervisor's default stop timeout (30s) so that the demo exits on its own first.
	demoShutdownTimeout = 20 * time.Second
	// demoMaxSleep bounds ?sleep.
	demoMaxSleep = time.Hour
	// demoWSReadLimit bounds one WebSocket message.
	demoWSReadLimit = 16 << 20
	// demoWSCloseGrace is how long a WebSocket client has to answer the server's close frame
	// at shutdown before the connection is cut.
	demoWSCloseGrace = time.Second
	// demoMaxPooledBuffer keeps the odd answer with huge headers from pinning memory in the pool.
	demoMaxPooledBuffer = 64 << 10
)

// Answer is the JSON body of every demo answer.
type Answer struct {
	Index     int               `json:"index"`
	Pid       int               `json:"pid"`
	Method    string            `json:"method"`
	Path      string            `json:"path"`
	Headers   map[string]string `json:"headers"` // first value of each header, canonical name
	BodyBytes int64             `json:"body_bytes"`
}

// Demo is the demo app's handler. It tracks its WebSocket sessions, which http.Server.Shutdown
// does not see once they are hijacked, so that shutdown can end them and wait for them.
type Demo struct {
	index    int
	pid      int
	upgrader websocket.Upgrader

	// onSleep, if set, is called when a request starts its ?sleep (tests only).
	onSleep func()

	mu       sync.Mutex
	closed   bool          // no new WebSocket sessions; guarded by mu
	closing  chan struct{} // closed with closed: live sessions say goodbye
	sessions sync.WaitGroup
}

// New returns the built-in demo app's handler; index is OLIO_INDEX, the worker it
// names in its answers.
func New(index int) *Demo {
	d := &Demo{index: index, pid: os.Getpid(), closing: make(chan struct{})}
	d.upgrader = websocket.Upgrader{
		CheckOrigin: func(*http.Request) bool { return true }, // a demo: any page may talk to it
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			writeDemoError(w, status, reason.Error())
		},
	}
	return d
}

// Env is what the demo app takes from its environment.
type Env struct {
	Port         string // PORT: it listens on 127.0.0.1:Port
	Index        int    // OLIO_INDEX
	NotifySocket string // NOTIFY_SOCKET: where to send READY=1 once listening; "" for nowhere
}

// Run serves the demo handler on 127.0.0.1:env.Port until ctx is done, then shuts down
// gracefully: it stops accepting, says goodbye (close 1001) to WebSocket clients, and waits
// up to demoShutdownTimeout for in-flight requests before cutting them off. Once it
// listens, it sends READY=1 to env.NotifySocket when that is set. It logs plain lines, which
// olio serve stamps with time and worker; a nil logger discards.
func Run(ctx context.Context, env Env, logger *log.Logger) error {
	if env.Port == "" {
		return errors.New("demo: PORT is not set; the demo app listens on 127.0.0.1:$PORT")
	}
	if _, err := strconv.ParseUint(env.Port, 10, 16); err != nil {
		return fmt.Errorf("demo: PORT=%q: want a port number from 0 to 65535", env.Port)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", env.Port))
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if env.NotifySocket != "" { // --ready notify: say so, as systemd's protocol has it
		if err := monitor.SendNotify(env.NotifySocket, "READY=1"); err != nil {
			ln.Close()
			return fmt.Errorf("demo: telling NOTIFY_SOCKET %s it is ready: %w", env.NotifySocket, err)
		}
	}
	return Serve(ctx, ln, New(env.Index), logger)
}

// Serve serves d on ln until ctx is done (see Run); it closes ln.
func Serve(ctx context.Context, ln net.Listener, d *Demo, logger *log.Logger) error {
	if logger == nil {
		logger = log.New(io.Discard, "", 0)
	}
	srv := &http.Server{
		Handler:           d,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logger,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Printf("demo app listening on %s", ln.Addr())

	var err error
	select {
	case err = <-served:
		// The listener failed: stop everything at once.
		srv.Close()
		d.Shutdown()
		return fmt.Errorf("demo: serve: %w", err)
	case <-ctx.Done():
	}
	logger.Print("demo app shutting down")
	d.GoAway()
	sctx, cancel := context.WithTimeout(context.Background(), demoShutdownTimeout)
	defer cancel()
	if err = srv.Shutdown(sctx); err != nil {
		srv.Close()
		err = fmt.Errorf("demo: in-flight requests still running after %v: %w", demoShutdownTimeout, err)
	}
	d.Shutdown()
	<-served // http.ErrServerClosed
	return err
}

// GoAway stops new WebSocket sessions and tells live ones to close.
func (d *Demo) GoAway() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		d.closed = true
		close(d.closing)
	}
}

// Shutdown is GoAway, then a wait until every WebSocket session has ended.
func (d *Demo) Shutdown() {
	d.GoAway()
	d.sessions.Wait()
}

// ServeHTTP answers r (see Answer), or echoes WebSocket messages on /ws.
func (d *Demo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ws" {
		d.serveWS(w, r)
		return
	}
	status, sleep := http.StatusOK, time.Duration(0)
	if r.URL.RawQuery != "" {
		q := r.URL.Query()
		var msg string
		if status, msg = parseDemoStatus(q.Get("status")); msg != "" {
			writeDemoError(w, http.StatusBadRequest, msg)
			return
		}
		if sleep, msg = parseDemoSleep(q.Get("sleep")); msg != "" {
			writeDemoError(w, http.StatusBadRequest, msg)
			return
		}
	}
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		writeDemoError(w, http.StatusBadRequest, "reading the request body: "+err.Error())
		return
	}
	if sleep > 0 {
		if d.onSleep != nil {
			d.onSleep()
		}
		t := time.NewTimer(sleep)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // the client is gone (or the server was cut off): nobody to answer
		}
	}
	if status < 200 {
		// An interim answer; the JSON follows in a final 200.
		w.WriteHeader(status)
		status = http.StatusOK
	}
	headers := make(map[string]string, len(r.Header))
	for name, values := range r.Header {
		if len(values) > 0 {
			headers[name] = values[0]
		}
	}
	writeDemoJSON(w, status, &Answer{
		Index:     d.index,
		Pid:       d.pid,
		Method:    r.Method,
		Path:      r.URL.Path,
		Headers:   headers,
		BodyBytes: n,
	})
}

// parseDemoStatus parses ?status: 100..599 but not 101 (which would need a protocol switch);
// "" means 200. A non-empty msg says what is wrong.
func parseDemoStatus(s string) (status int, msg string) {
	if s == "" {
		return http.StatusOK, ""
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 || n > 599 {
		return 0, "status=" + strconv.Quote(s) + ": want an HTTP status code from 100 to 599"
	}
	if n == http.StatusSwitchingProtocols {
		return 0, "status=101: switching protocols is only for /ws"
	}
	return n, ""
}

// parseDemoSleep parses ?sleep, in milliseconds, up to demoMaxSleep; "" means none. A non-empty
// msg says what is wrong.
func parseDemoSleep(s string) (d time.Duration, msg string) {
	if s == "" {
		return 0, ""
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms < 0 || ms > demoMaxSleep.Milliseconds() {
		return 0, "sleep=" + strconv.Quote(s) + ": want milliseconds from 0 to " + strconv.FormatInt(demoMaxSleep.Milliseconds(), 10)
	}
	return time.Duration(ms) * time.Millisecond, ""
}

// serveWS echoes every message of a WebSocket session, text as text and binary as binary,
// until the client closes or the server shuts down.
func (d *Demo) serveWS(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		writeDemoError(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	d.sessions.Add(1)
	d.mu.Unlock()
	defer d.sessions.Done()

	conn, err := d.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	defer conn.Close()
	conn.SetReadLimit(demoWSReadLimit)

	// At shutdown, the watcher sends a close frame; the client's answering close frame (or the
	// read deadline) ends the echo loop.
	done, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-d.closing:
			deadline := time.Now().Add(demoWSCloseGrace)
			msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down")
			_ = conn.WriteControl(websocket.CloseMessage, msg, deadline)
			_ = conn.SetReadDeadline(deadline)
		case <-done:
		}
	}()
	defer func() { close(done); <-watched }()

	for {
		typ, rd, err := conn.NextReader()
		if err != nil {
			return
		}
		wr, err := conn.NextWriter(typ)
		if err != nil {
			return
		}
		if _, err := io.Copy(wr, rd); err != nil {
			return
		}
		if err := wr.Close(); err != nil {
			return
		}
	}
}

// demoEncoder is a buffer with a JSON encoder writing into it, pooled in demoEncoders.
type demoEncoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var demoEncoders = sync.Pool{New: func() any {
	e := new(demoEncoder)
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}}

// writeDemoJSON answers with v as JSON, with a Content-Length.
func writeDemoJSON(w http.ResponseWriter, status int, v any) {
	e := demoEncoders.Get().(*demoEncoder)
	defer func() {
		if e.buf.Cap() <= demoMaxPooledBuffer {
			demoEncoders.Put(e)
		}
	}()
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		http.Error(w, "encoding the answer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if status != http.StatusNoContent && status != http.StatusNotModified {
		h.Set("Content-Length", strconv.Itoa(e.buf.Len()))
	}
	w.WriteHeader(status)
	_, _ = w.Write(e.buf.Bytes()) // refused for 204 and 304, which have no body
}

// writeDemoError answers {"error": msg}.
func writeDemoError(w http.ResponseWriter, status int, msg string) {
	writeDemoJSON(w, status, struct {
		Error string `json:"error"`
	}{msg})
}
