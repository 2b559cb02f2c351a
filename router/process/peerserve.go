package process

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/olio-dev/olio/router/internal/httprules"
	"github.com/olio-dev/olio/router/internal/peerwire"
)

// peerServer is the private side: it serves the requests peers forward over this router's
// mux streams, in the peer leg's frames (package peerwire), one exchange at a time per stream.
// It takes the place of an http.Server there, with the same Serve, Shutdown and Close.
type peerServer struct {
	r *Router
	// headLimit bounds a request head: the public side's header limit and room for what the
	// forwarder adds (X-Forwarded-*).
	headLimit int

	mu       sync.Mutex
	conns    map[*peerConn]bool // true: idle, waiting for its next request
	shutting bool
	gone     chan struct{} // closed when conns empties after Shutdown began
	ln       net.Listener  // closed by Shutdown and Close, as http.Server does
	stop     chan struct{} // closed by Shutdown and Close: ends the idle sweep
}

// peerIdleTimeout closes a stream from a peer idle this long (the peer's pool keeps its
// idle streams for later; this reaps what a peer no longer uses).
const peerIdleTimeout = 5 * time.Minute

// newPeerServer is the server of the private side, where peers forward requests over mux
// streams.
func (r *Router) newPeerServer() *peerServer {
	limit := r.conf().MaxHeaderBytes
	if limit <= 0 {
		limit = http.DefaultMaxHeaderBytes
	}
	return &peerServer{r: r, headLimit: limit + peerHeaderSlack, conns: map[*peerConn]bool{}, stop: make(chan struct{})}
}

// Serve serves the streams ln accepts until ln is closed.
func (s *peerServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	go s.sweep()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		pc := &peerConn{s: s, c: c, br: bufio.NewReaderSize(c, 4<<10), bw: bufio.NewWriterSize(c, 4<<10), fresh: true}
		pc.watch.watchStream(c)
		s.mu.Lock()
		if s.shutting {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[pc] = false
		s.mu.Unlock()
		go pc.serve()
	}
}

// sweep closes the streams idle longer than peerIdleTimeout, until the server stops.
func (s *peerServer) sweep() {
	t := time.NewTicker(peerIdleTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.mu.Lock()
			for c, idle := range s.conns {
				if idle && now.Sub(c.idleSince) > peerIdleTimeout {
					c.c.Close()
				}
			}
			s.mu.Unlock()
		}
	}
}

// stoppingLocked marks the server as shutting down; s.mu is held.
func (s *peerServer) stoppingLocked() {
	if !s.shutting {
		s.shutting = true
		close(s.stop)
	}
}

// Shutdown stops serving: idle streams are closed at once, each busy one once its request
// is answered. It waits for them until ctx is done, then closes what is left.
func (s *peerServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stoppingLocked()
	if s.gone == nil {
		s.gone = make(chan struct{})
		if len(s.conns) == 0 {
			close(s.gone)
		}
	}
	for c, idle := range s.conns {
		switch {
		case idle:
			c.c.Close()
		case c.fresh:
			// Opened by a peer with its first request on the way (yamux announces a stream
			// before its first bytes): served if they come soon, closed if not.
			c.c.SetReadDeadline(time.Now().Add(silentGrace))
		}
	}
	gone, ln := s.gone, s.ln
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	select {
	case <-gone:
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close closes every stream at once, idle or not.
func (s *peerServer) Close() error {
	s.mu.Lock()
	s.stoppingLocked()
	for c := range s.conns {
		c.c.Close()
	}
	ln := s.ln
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	return nil
}

// setIdle marks c idle or busy; false: the server is shutting down and c must close. A
// fresh stream, whose first request is still to come, is neither: a shutdown waits a little
// for it (Shutdown) instead of closing it.
func (s *peerServer) setIdle(c *peerConn, idle bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.fresh {
		if !idle {
			c.fresh = false
			c.c.SetReadDeadline(time.Time{}) // the one a shutdown may have set
		}
		return true
	}
	if s.shutting && idle {
		return false
	}
	s.conns[c] = idle
	if idle {
		c.idleSince = time.Now()
	}
	return true
}

func (s *peerServer) forget(c *peerConn) {
	s.mu.Lock()
	delete(s.conns, c)
	if s.gone != nil && len(s.conns) == 0 {
		select {
		case <-s.gone:
		default:
			close(s.gone)
		}
	}
	s.mu.Unlock()
}

// peerHTTPServer is the http.ServerContextKey value of a forwarded request's context: the
// peer side has no http.Server of its own, and a proxy reads the mark, not the server.
var peerHTTPServer = &http.Server{}

// peerBase is every forwarded request's base context, made once: net/http's server mark, as
// under net/http's server (it makes ReverseProxy and the fast path break an answer the app
// cut short off — http.ErrAbortHandler, recovered in serveOne: the stream is closed without
// its end frame — instead of ending it cleanly), and fromPeer.
var peerBase = context.WithValue(context.WithValue(context.Background(), http.ServerContextKey, peerHTTPServer), fromPeer, true)

// mine is the version this side speaks (the router's, set on its transport).
func (s *peerServer) mine() int { return s.r.remoteTransport.mine() }

// maxHello bounds a hello frame (the secret).
const maxHello = 4 << 10

// peerConn is one stream from a peer.
type peerConn struct {
	s         *peerServer
	c         net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	buf       []byte // frame headers and heads being written
	hijacked  bool
	trusted   bool      // its hello carried the right secret
	version   int       // the peer protocol version its hello asked for
	interims  int       // interim answers sent for the current request
	fresh     bool      // nothing read yet; guarded by s.mu
	idleSince time.Time // guarded by s.mu
	watch     peerWatch // the current request's, kept for the next
}

// serve serves the stream's requests one after another until it breaks, the peer closes
// it, or the server shuts down.
func (c *peerConn) serve() {
	defer func() {
		if !c.hijacked {
			c.c.Close()
		}
		c.s.forget(c)
	}()
	for c.s.setIdle(c, true) {
		typ, n, err := peerwire.ReadFrameHeader(c.br)
		if err != nil {
			return
		}
		c.s.setIdle(c, false)
		if !c.trusted {
			if !c.hello(typ, n) {
				return
			}
			if typ, n, err = peerwire.ReadFrameHeader(c.br); err != nil {
				return
			}
		}
		if typ != peerwire.FrameRequest {
			return
		}
		head, err := peerwire.ReadPayload(c.br, n, c.s.headLimit)
		if errors.Is(err, peerwire.ErrHeadTooLarge) {
			c.answer(http.StatusRequestHeaderFieldsTooLarge, "olio: the forwarded request header is too large")
			return
		}
		if err != nil || !c.serveOne(head) {
			return
		}
	}
}

// hello reads a stream's first frame, of type typ and n bytes: a hello in a version this side
// speaks, with the right secret; false: the stream was refused and must close. A versioned
// hello is answered with the version agreed, or, when this side does not speak it, with
// its own, the request left unread; a hello that is not understood, 403, as a version 1
// build does.
func (c *peerConn) hello(typ byte, n int) bool {
	mine := c.s.mine()
	var secret string
	switch {
	case typ == peerwire.FrameHello && peerwire.Speaks(mine, peerwire.VersionBare):
		p, err := peerwire.ReadPayload(c.br, n, maxHello)
		if err != nil {
			return false
		}
		secret, c.version = p, peerwire.VersionBare
	case typ == peerwire.FrameHello && mine > peerwire.VersionBare:
		c.s.r.logger.Error("peer protocol version mismatch: refused a stream", "theirs", peerwire.VersionBare, "mine", mine)
		c.answer(http.StatusBadGateway, fmt.Sprintf("olio: the forwarding worker speaks peer protocol version %d; worker %d speaks %d and %d",
			peerwire.VersionBare, c.s.r.index, mine, mine-1))
		return false
	case typ == peerwire.FrameVersion && mine > peerwire.VersionBare:
		p, err := peerwire.ReadPayload(c.br, n, maxHello)
		if err != nil {
			return false
		}
		v, s, err := peerwire.DecodeVersionHello(p)
		if err != nil {
			return false
		}
		if v == peerwire.VersionBare || !peerwire.Speaks(mine, v) {
			c.s.r.logger.Error("peer protocol version mismatch: refused a stream", "theirs", v, "mine", mine)
			c.bw.Write(peerwire.AppendVersionHello(c.buf[:0], mine, ""))
			c.bw.Flush()
			return false
		}
		// Sent at once: a forwarder holds a request's body until it has this.
		c.bw.Write(peerwire.AppendVersionHello(c.buf[:0], v, ""))
		if c.bw.Flush() != nil {
			return false
		}
		secret, c.version = s, v
	}
	if c.version == 0 || !secretOK(c.s.r.settings().secret, []string{secret}) {
		c.answer(http.StatusForbidden, "olio: forwarded request without the right secret")
		return false
	}
	c.trusted = true
	return true
}

// answer sends a short plain-text answer that the router itself makes.
func (c *peerConn) answer(code int, text string) {
	w := &peerWriter{c: c, header: http.Header{}}
	w.header.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	w.Write([]byte(text + "\n"))
	w.finish(false)
}

// serveOne serves one request of head; true: the stream can carry the next one.
func (c *peerConn) serveOne(head string) (reuse bool) {
	ctx, cancel := context.WithCancel(peerBase) // peerBase's marks
	defer cancel()
	req, flags, err := c.readRequest(ctx, head)
	if err != nil {
		c.answer(http.StatusBadRequest, "olio: malformed forwarded request")
		return false
	}
	watch := &c.watch
	watch.reset(cancel)
	body, _ := req.Body.(*peerwire.Body)
	if body == nil {
		watch.begin()
	} else {
		body.Ended = watch.start
	}
	c.interims = 0
	w := &peerWriter{c: c, header: http.Header{}, isHead: req.Method == http.MethodHead, watch: watch}
	defer func() {
		if p := recover(); p != nil {
			watch.stop()
			reuse = false
			if p != http.ErrAbortHandler { //nolint:errorlint // net/http's sentinel is compared so too
				c.s.r.logger.Error("panic serving a forwarded request", "path", req.URL.Path, "panic", p)
			}
		}
	}()
	c.s.r.servePeer(w, req, flags)
	if !watch.stop() { // the forwarder gave the request up
		return false
	}
	if w.hijacked {
		c.hijacked = true
		return false
	}
	reuse = body == nil || body.Complete()
	return w.finish(reuse) == nil && reuse
}

// readRequest decodes a request head, with context ctx, reading its end frame too when it
// has no body.
func (c *peerConn) readRequest(ctx context.Context, head string) (req *http.Request, flags uint64, err error) {
	rh, err := peerwire.DecodeRequestHead(head)
	if err != nil {
		return nil, 0, err
	}
	u, err := url.ParseRequestURI(rh.URI)
	if err != nil {
		return nil, 0, err
	}
	r := http.Request{
		Method: rh.Method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: rh.Header, Host: rh.Host, RequestURI: rh.URI, RemoteAddr: c.c.RemoteAddr().String(),
		ContentLength: rh.Length, Trailer: rh.Trailer,
	}
	req = r.WithContext(ctx) // the only copy made
	if rh.Length == -1 {
		req.TransferEncoding = []string{"chunked"}
	}
	if rh.Length != 0 {
		req.Body = &peerwire.Body{R: c.br, Trailer: &req.Trailer}
		return req, rh.Flags, nil
	}
	// No body: its end frame follows the head at once.
	req.Body = http.NoBody
	end := peerwire.Body{R: c.br, Trailer: &req.Trailer}
	if end.Next(); !end.Complete() {
		return nil, 0, peerwire.ErrFrame
	}
	return req, rh.Flags, nil
}

// peerWatch notices, while a request is served, that its forwarder closed the stream (the
// client went away, or the forwarder timed out), or that their session ended, and cancels
// the request. mux tells as the close arrives (OnPeerClose), without a read: the watch costs
// nothing per request. It starts once the request's body has been read. A stream's
// requests take turns with one peerWatch.
type peerWatch struct {
	mu      sync.Mutex
	cancel  context.CancelFunc // the current request's; nil once stopped
	started bool               // the request's body has been read: a close cancels it
	gone    bool               // the forwarder is done with the stream
	kept    bool               // what stop found: the forwarder was still there
	start   func()             // w.begin, made once
}

// peerCloser is a stream that tells when its peer closes it (mux's).
type peerCloser interface{ OnPeerClose(fn func()) }

// watchStream has the watch told when the forwarder closes c (a stream that cannot tell is
// not watched).
func (w *peerWatch) watchStream(c net.Conn) {
	w.start = w.begin
	if pc, ok := c.(peerCloser); ok {
		pc.OnPeerClose(w.closed)
	}
}

// reset makes the watch the next request's, whose context cancel ends.
func (w *peerWatch) reset(cancel context.CancelFunc) {
	w.mu.Lock()
	w.cancel, w.started = cancel, false
	w.mu.Unlock()
}

// begin starts watching, once the request's body has been read.
func (w *peerWatch) begin() {
	w.mu.Lock()
	cancel := w.cancel
	w.started = cancel != nil
	gone := w.gone
	w.mu.Unlock()
	if gone && cancel != nil {
		cancel()
	}
}

// closed is mux's word that the forwarder closed the stream (run on the session's receive
// loop: it must not block).
func (w *peerWatch) closed() {
	w.mu.Lock()
	w.gone = true
	var cancel context.CancelFunc
	if w.started {
		cancel = w.cancel
	}
	w.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// stop ends the watch (a second call returns what the first did); false: the forwarder is
// gone.
func (w *peerWatch) stop() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancel != nil {
		w.cancel, w.started = nil, false
		w.kept = !w.gone
	}
	return w.kept
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// peerWriter is the http.ResponseWriter of a forwarded request: it sends the answer back in
// frames. A short answer is held until the handler returns, so that it goes back with its
// length, as net/http's server would send it.
type peerWriter struct {
	c        *peerConn
	header   http.Header
	isHead   bool
	status   int
	head     []byte   // the response head, from WriteHeader, before its content length
	trailers []string // announced in the Trailer header
	sent     bool     // the head is written
	held     []byte   // body held before the head is sent
	noBody   bool     // the status allows no body
	declared int64    // the Content-Length the handler set (-1: none)
	written  int64    // body bytes written (for HEAD: that would have been)
	hijacked bool
	err      error
	watch    *peerWatch
}

// holdBody is how much of an answer is held to learn its length (net/http's server: 2 KiB).
const holdBody = 4 << 10

func (w *peerWriter) Header() http.Header { return w.header }

func (w *peerWriter) WriteHeader(code int) {
	if w.status != 0 || w.hijacked {
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.sendInterim(code)
		return
	}
	w.status = code
	w.noBody = w.isHead || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified
	w.declared = -1
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.declared = n
		}
	}
	for _, v := range w.header["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(k))
			}
		}
	}
	b := binary.AppendUvarint(peerwire.BeginFrame(w.c.buf[:0], peerwire.FrameResponse), uint64(code))
	b = peerwire.AppendHeader(b, w.header, httprules.Hops(w.header["Connection"], false))
	w.head = peerwire.AppendNames(b, w.trailers)
}

// sendInterim sends an interim answer (103 Early Hints) back at once, with the header as it
// is (which stays for the final answer, as net/http's server keeps it); on a stream of
// version 1, or past maxInterim for one request, it is dropped.
func (w *peerWriter) sendInterim(code int) {
	if w.c.version < peerwire.VersionInterim || w.c.interims >= maxInterim || code < 100 || w.err != nil {
		return
	}
	w.c.interims++
	w.c.buf = peerwire.AppendInterim(w.c.buf[:0], code, w.header)
	if _, w.err = w.c.bw.Write(w.c.buf); w.err == nil {
		w.err = w.c.bw.Flush()
	}
}

func (w *peerWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, http.ErrContentLength // as net/http's server: more than the handler declared
	}
	w.written += int64(len(p))
	if w.noBody || len(p) == 0 {
		return len(p), nil
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.sent {
		if len(w.held)+len(p) <= holdBody {
			w.held = append(w.held, p...)
			return len(p), nil
		}
		w.sendHead(-1)
	}
	n, err := peerwire.WriteData(w.c.bw, p)
	w.err = err
	return n, err
}

// sendHead writes the head with the answer's content length (-1: unknown, unless the
// header says it), and the body held so far.
func (w *peerWriter) sendHead(length int) {
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
			length = int(n)
		}
	} else if len(w.trailers) > 0 || (w.noBody && !(w.isHead && length > 0)) {
		length = -1
	}
	b := peerwire.EndFrame(binary.AppendVarint(w.head, int64(length)), 0)
	w.sent = true
	if _, err := w.c.bw.Write(b); err != nil {
		w.err = err
		return
	}
	w.c.buf = b[:0]
	if len(w.held) > 0 {
		_, w.err = peerwire.WriteData(w.c.bw, w.held)
		w.held = nil
	}
}

// Flush sends what is written so far.
func (w *peerWriter) Flush() {
	if w.hijacked {
		return
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sent {
		w.sendHead(-1)
	}
	if w.err == nil {
		w.err = w.c.bw.Flush()
	}
}

// FlushError is Flush, for http.ResponseController.
func (w *peerWriter) FlushError() error {
	w.Flush()
	return w.err
}

// finish ends the answer: the head (if not sent), the body held, the trailers; reuse says
// whether the stream carries another request after it.
func (w *peerWriter) finish(reuse bool) error {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sent {
		n := len(w.held)
		if w.isHead && w.written > 0 {
			n = int(w.written) // as net/http's server: the length the body would have had
		}
		w.sendHead(n)
	}
	if w.err != nil {
		return w.err
	}
	var t http.Header
	for _, k := range w.trailers {
		if v, ok := w.header[k]; ok {
			if t == nil {
				t = http.Header{}
			}
			t[k] = v
		}
	}
	for k, v := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if t == nil {
				t = http.Header{}
			}
			t[strings.TrimPrefix(k, http.TrailerPrefix)] = v
		}
	}
	end := peerwire.FrameEnd
	if !reuse {
		end = peerwire.FrameEndClose
	}
	w.c.buf = peerwire.AppendEndType(w.c.buf[:0], end, t)
	if _, err := w.c.bw.Write(w.c.buf); err != nil {
		return err
	}
	return w.c.bw.Flush()
}

// SetWriteDeadline bounds the answer's writes, for http.ResponseController.
func (w *peerWriter) SetWriteDeadline(t time.Time) error { return w.c.c.SetWriteDeadline(t) }

// SetReadDeadline bounds the request body's reads, for http.ResponseController.
func (w *peerWriter) SetReadDeadline(t time.Time) error { return w.c.c.SetReadDeadline(t) }

// EnableFullDuplex does nothing: the peer leg is full duplex.
func (w *peerWriter) EnableFullDuplex() error { return nil }

// Hijack hands the stream over as a raw tunnel (an upgrade: WebSocket): the forwarder reads
// the answer to the upgrade as HTTP/1.1 from it, then the new protocol.
func (w *peerWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked || w.sent {
		return nil, nil, errors.New("router: the answer has begun; cannot hijack")
	}
	if !w.watch.stop() {
		return nil, nil, errors.New("router: the forwarder is gone")
	}
	w.hijacked = true
	w.c.buf = peerwire.AppendFrameHeader(w.c.buf[:0], peerwire.FrameUpgrade, 0)
	w.c.bw.Write(w.c.buf)
	if err := w.c.bw.Flush(); err != nil {
		return nil, nil, err
	}
	rc := &tunnelConn{Conn: w.c.c, br: w.c.br}
	return rc, bufio.NewReadWriter(w.c.br, bufio.NewWriter(w.c.c)), nil
}

// tunnelConn is a hijacked stream: reads drain what was buffered first.
type tunnelConn struct {
	net.Conn
	br *bufio.Reader
}

func (t *tunnelConn) Read(p []byte) (int, error) { return t.br.Read(p) }
