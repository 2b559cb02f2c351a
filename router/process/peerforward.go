package process

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/olio-dev/olio/mux"
	"github.com/olio-dev/olio/router/internal/connpool"
	"github.com/olio-dev/olio/router/internal/httprules"
	"github.com/olio-dev/olio/router/internal/peerwire"
)

// peerTransport carries requests to their owners over mux streams, in the peer leg's frames
// (package peerwire), for forward. Streams are kept for the next request, one pool per peer.
type peerTransport struct {
	r *Router
	// version is the peer protocol version this router speaks, and the one before it, as
	// forwarder and as owner (0: peerwire.Version; a test sets an older or newer build's).
	version atomic.Int32

	mu    sync.Mutex
	peers map[int]*peerStreams
	heard map[int]peerHeard // the version each peer answered a hello in lately
}

// peerHeard is the version a peer was last heard speaking, and when.
type peerHeard struct {
	version int
	at      time.Time
}

// peerVersionMemory is how long a peer's version is taken as known: a peer found speaking
// the previous version is greeted in it for that long, then asked again (it may have been
// replaced by a new build); a request body is sent on a new stream before the owner's reply
// to its hello only to a peer heard speaking this version within it.
const peerVersionMemory = 30 * time.Second

func newPeerTransport(r *Router) *peerTransport {
	return &peerTransport{r: r, peers: map[int]*peerStreams{}, heard: map[int]peerHeard{}}
}

// mine is the version this side speaks.
func (p *peerTransport) mine() int {
	if v := p.version.Load(); v != 0 {
		return int(v)
	}
	return peerwire.Version
}

// helloVersion is the version to greet peer i in on a new stream: this side's own, or the
// previous one if i was found speaking it lately.
func (p *peerTransport) helloVersion(i int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h, ok := p.heard[i]; ok && time.Since(h.at) < peerVersionMemory && peerwire.Speaks(p.mine(), h.version) {
		return h.version
	}
	return p.mine()
}

// known reports whether peer i was heard speaking version v lately.
func (p *peerTransport) known(i, v int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.heard[i]
	return ok && h.version == v && time.Since(h.at) < peerVersionMemory
}

// learn records that peer i speaks version v.
func (p *peerTransport) learn(i, v int) {
	p.mu.Lock()
	p.heard[i] = peerHeard{version: v, at: time.Now()}
	p.mu.Unlock()
}

// versionRefusal is an owner's refusal of a stream's hello, before it read the request: it
// does not speak the version asked for, and speaks theirs (1: it answered as a version 1
// build answers a hello it does not know, 403).
type versionRefusal struct {
	theirs, asked int
}

func (e *versionRefusal) Error() string {
	return fmt.Sprintf("router: the owner speaks peer protocol version %d, not %d", e.theirs, e.asked)
}

// peerVersionError is an owner speaking a version this side does not.
type peerVersionError struct {
	owner, theirs, mine int
}

func (e *peerVersionError) Error() string {
	return fmt.Sprintf("router: worker %d speaks peer protocol version %d; this build speaks %d and %d: "+
		"run at most two consecutive builds side by side", e.owner, e.theirs, e.mine, e.mine-1)
}

// pool returns the pool of streams to peer i.
func (p *peerTransport) pool(i int) *peerStreams {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.peers[i]
	if !ok {
		t = newPeerStreams(func(ctx context.Context) (net.Conn, error) { return p.r.openPeer(ctx, i) })
		p.peers[i] = t
	}
	return t
}

// CloseIdleConnections closes the idle streams to every peer.
func (p *peerTransport) CloseIdleConnections() {
	p.mu.Lock()
	peers := p.peers
	p.peers = map[int]*peerStreams{}
	p.mu.Unlock()
	for _, t := range peers {
		t.CloseIdleConnections()
	}
}

// send sends a request to peer i, its head frame built, and reads the answer's head into
// dst (nil: a new header). body, if not nil, is sent after the head. Interim answers before
// the final one go to interim (nil: dropped).
//
// A request is sent again, on a new stream, only when it certainly never reached the owner
// (the owner refused the stream before reading it) or when http.Transport would send it
// again (replayable: no body, and a safe method or an idempotency key), after a pooled
// stream failed before any answer.
//
// A request is sent only to an owner heard from lately (mux's Silence): one that is stopped
// (SIGSTOP) or stuck is waited for, up to the forward timeout (then 503, Retry-After: the
// request never reached it). One sent to an owner that then goes silent may sit in its
// buffers and run when it resumes: it is never sent again, and past the request timeout it
// is answered 504, without Retry-After.
func (p *peerTransport) send(i int, req *http.Request, head []byte, body io.Reader, dst http.Header, interim func(int, http.Header)) (*http.Response, error) {
	if !p.r.pool.Live(i) {
		// Its pooled streams too wait for it: what is written on them reaches it only
		// when it resumes.
		ctx, cancel := context.WithTimeout(req.Context(), p.r.conf().ForwardTimeout)
		err := p.r.pool.Ready(ctx, i)
		cancel()
		if err != nil {
			if ctxErr := req.Context().Err(); ctxErr != nil {
				return nil, ctxErr
			}
			return nil, err
		}
	}
	t := p.pool(i)
	replay := connpool.Replayable(req)
	for attempt := 0; ; attempt++ {
		ac, reused, err := t.get(req.Context(), attempt > 0)
		for err == nil && reused && !alive(ac) {
			// A stream the owner closed, or whose session ended (the owner was replaced and
			// has gone), is not used: the next idle one, or a new one.
			ac.c.Close()
			ac, reused, err = t.get(req.Context(), false)
		}
		if err != nil {
			return nil, err
		}
		x := &exchange{t: t, p: p, peer: i, ac: ac, req: req, body: body, interim: interim, timeout: p.r.conf().RequestTimeout}
		x.halves.Store(1)
		resp, err := x.run(p.r.conf().Secret, head, dst)
		if err == nil {
			return resp, nil
		}
		ac.c.Close()
		var vr *versionRefusal
		if errors.As(err, &vr) {
			// Refused before the request was read: a build of the previous version is
			// greeted in it on a new stream; any other is an error to see.
			if !peerwire.Speaks(p.mine(), vr.theirs) {
				err := &peerVersionError{owner: i, theirs: vr.theirs, mine: p.mine()}
				p.r.logger.Error("peer protocol version mismatch", "owner", i, "theirs", vr.theirs, "mine", p.mine())
				return nil, err
			}
			p.learn(i, vr.theirs)
			if attempt < 3 && !x.bodySent && req.Context().Err() == nil {
				continue
			}
		}
		if x.unsent && attempt < 3 && req.Context().Err() == nil {
			// The request did not leave whole: its stream was closed under it (its session
			// ended as it was taken). It goes on a new one, silent owner or not.
			continue
		}
		if x.ownerSilent() && req.Context().Err() == nil {
			// Sent to an owner that has stopped answering: the request may sit in its
			// buffers and run when it resumes, so it is not sent again.
			p.r.logger.Warn("owner silent with a request sent to it", "owner", i, "path", req.URL.Path, "err", err)
			return nil, errOwnerSilent
		}
		// A stream the owner refused never reached it: the owner is being replaced and has
		// sent this session away (onDrain), and yamux resets a stream whose opening crossed
		// that. A new stream reaches the replacement once this router has heard the go-away.
		if mux.Refused(err) && !errors.Is(err, errAnswerStarted) && attempt < 3 && body == nil && req.Context().Err() == nil {
			continue
		}
		// A stream of a peer that has restarted, or that the owner closed while idle, fails
		// before any answer: the owner may have run the request, so only what http.Transport
		// would send again is (replayable), once, on a new stream.
		if reused && attempt == 0 && req.Context().Err() == nil && !errors.Is(err, errAnswerStarted) && replay {
			continue
		}
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
}

// forward sends req to its owner (the context's ownerKey) over the peer leg and writes the
// answer to w, as httputil.ReverseProxy would (hop-by-hop fields, X-Forwarded-*, trailers,
// streamed answers flushed as they come, http.ErrAbortHandler when the answer breaks off,
// an upgrade's tunnel) without copying the request, its header or the answer's header on
// the way.
func (r *Router) forward(w http.ResponseWriter, req *http.Request) {
	up := httprules.UpgradeType(req.Header)
	if !httprules.Printable(up) {
		r.remoteError(w, req, fmt.Errorf("router: the client asked to switch to an invalid protocol %q", up))
		return
	}
	var body io.Reader
	if req.ContentLength != 0 && req.Body != nil && req.Body != http.NoBody {
		body = clientBody{req.Body} // a broken client body is a 400 (failBody)
	}
	hb := heads.Get().(*[]byte)
	head := appendRequestHead((*hb)[:0], req, body != nil, up)
	resp, err := r.remoteTransport.send(req.Context().Value(ownerKey{}).(int), req, head, body, w.Header(), interimTo(w))
	if cap(head) <= 64<<10 {
		*hb = head
		heads.Put(hb)
	}
	if err != nil {
		if errors.Is(err, errOwnerSilent) && req.Context().Err() == nil {
			// No Retry-After: the owner may still run the request when it resumes.
			r.fail(w, http.StatusGatewayTimeout, fmt.Sprintf("olio: worker %d stopped answering with the request sent to it", req.Context().Value(ownerKey{}).(int)))
			return
		}
		r.remoteError(w, req, err)
		return
	}
	if t, ok := resp.Body.(*tunnelConn); ok {
		r.tunnel(w, req, resp, t, up)
		return
	}
	if _, ok := resp.Body.(*closeWith); ok {
		// The owner took the stream over and answered an upgrade with something else: its
		// header is HTTP/1.1's, not yet in w's.
		skip := httprules.Hops(resp.Header["Connection"], false)
		for k, vs := range resp.Header {
			if !skip.Drop(k) {
				w.Header()[k] = append(w.Header()[k], vs...)
			}
		}
	}
	r.copyAnswer(w, req, resp)
}

// interimTo is how forward passes an interim answer on to its client: as the app leg does
// (httprules.PassInterim).
func interimTo(w http.ResponseWriter) func(int, http.Header) {
	return func(code int, h http.Header) { httprules.PassInterim(w, code, h) }
}

// tunnel joins the client to the owner's tunnel after its 101, as ReverseProxy does: the
// answer is written on the client's hijacked connection, then bytes are copied both ways
// until either side ends; the request's context ending ends it too.
func (r *Router) tunnel(w http.ResponseWriter, req *http.Request, resp *http.Response, back *tunnelConn, up string) {
	defer back.Close()
	if got := httprules.UpgradeType(resp.Header); !httprules.Printable(got) || !strings.EqualFold(got, up) {
		r.remoteError(w, req, fmt.Errorf("router: the owner switched to protocol %q when %q was asked for", got, up))
		return
	}
	r.passing.starting.Add(1) // until it is tracked: a drain looks for it once it is
	entered := false
	defer func() {
		if !entered {
			r.passing.starting.Done()
		}
	}()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		r.remoteError(w, req, fmt.Errorf("router: cannot switch protocols: %w", err))
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(req.Context(), func() { back.Close() })
	defer stop()
	if writeSwitch(w, brw, resp) != nil {
		return
	}
	from, untrack := r.trackPassing(back, conn, isWebSocket(resp.Header))
	entered = true
	r.passing.starting.Done()
	defer untrack()
	done := make(chan struct{}, 2)
	go tunnelCopy(conn, from, done)
	go tunnelCopy(back, conn, done)
	<-done // either side ended: the deferred closes end the other
}

// tunnelCopy copies one direction of a tunnel.
func tunnelCopy(dst io.Writer, src io.Reader, done chan<- struct{}) {
	io.Copy(dst, src)
	done <- struct{}{}
}

// heads recycles the buffers request heads are built in (send has written them out when it
// returns).
var heads = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// copyAnswer writes an owner's answer, whose header is in w's already, to w.
func (r *Router) copyAnswer(w http.ResponseWriter, req *http.Request, resp *http.Response) {
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		w.Header().Add("Trailer", strings.Join(keys, ", "))
	}
	announced := len(resp.Trailer)
	w.WriteHeader(resp.StatusCode)
	if err := r.copyBody(w, resp); err != nil {
		resp.Body.Close()
		if req.Context().Value(http.ServerContextKey) != nil {
			panic(http.ErrAbortHandler) // the server cuts the client's connection
		}
		return
	}
	resp.Body.Close()
	if len(resp.Trailer) > 0 {
		http.NewResponseController(w).Flush() // chunked, for the trailers to follow
	}
	if len(resp.Trailer) == announced {
		for k, vs := range resp.Trailer {
			w.Header()[k] = append(w.Header()[k], vs...)
		}
		return
	}
	for k, vs := range resp.Trailer {
		k = http.TrailerPrefix + k
		w.Header()[k] = append(w.Header()[k], vs...)
	}
}

// copyBody copies an answer's body to w, flushing after every write an answer of unknown
// length or an event stream.
func (r *Router) copyBody(w http.ResponseWriter, resp *http.Response) error {
	var rc *http.ResponseController
	if resp.ContentLength == -1 || isEventStream(w.Header().Get("Content-Type")) {
		rc = http.NewResponseController(w)
	}
	buf := buffers.Get()
	defer buffers.Put(buf)
	for {
		n, rerr := resp.Body.Read(buf)
		if rerr != nil && rerr != io.EOF && !errors.Is(rerr, context.Canceled) {
			r.errorLog.Printf("router: reading a forwarded answer: %v", rerr)
		}
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			if rc != nil {
				rc.Flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// isEventStream reports whether a Content-Type is text/event-stream (server-sent events).
func isEventStream(ct string) bool {
	base, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(base), "text/event-stream")
}

// alive reports whether a pooled stream is still open at the owner's end (the owner closes
// idle streams when it shuts down), as far as this side has heard: the owner has not closed
// it, and nothing is left unread on it. Checked before a request whose body could not be
// sent again. A peer's stream knows whether its owner closed it without a read.
func alive(ac *peerStream) bool {
	if ac.br.Buffered() > 0 {
		return false
	}
	if s, ok := ac.c.(*mux.Stream); ok {
		return !s.PeerClosed()
	}
	ac.c.SetReadDeadline(time.Unix(1, 0))
	_, err := ac.br.Peek(1)
	ac.c.SetReadDeadline(time.Time{})
	return isTimeout(err)
}

// errOwnerSilent: a request was sent to an owner that has not been heard from since, and got
// no answer within the request timeout (or its session was given up): a 504, without
// Retry-After, since the owner may still run it when it resumes.
var errOwnerSilent = fmt.Errorf("router: the owner went silent with the request sent: %w", context.DeadlineExceeded)

// ownerRecheck is how often an exchange past its request timeout looks again at an owner
// that is heard from (and so will answer, by its own timeouts).
const ownerRecheck = 250 * time.Millisecond

// exchange is one request and its answer on one stream. The stream goes back to the pool
// once both ends of it are complete: the request's end frame sent and the answer's read.
type exchange struct {
	t    *peerStreams
	p    *peerTransport
	peer int // the owner's index
	ac   *peerStream
	req  *http.Request
	body io.Reader // nil: none
	// interim takes the interim answers before the final one (nil: dropped).
	interim func(int, http.Header)
	// bodySent: the body has begun to be sent (it cannot be sent again).
	bodySent bool
	// unsent: the request's last write failed on a stream already closed (its session
	// ended): at most a first part of the frames went out (a hello and head past the
	// buffer), which the owner cannot decode, so the request never ran there.
	unsent bool

	stop func() bool // stops the request context's watch on the stream

	timeout time.Duration // --request-timeout: when to look at a silent owner (0: never)
	// watching is the stream whose watch is armed (nil: none); silent: the watch found the
	// owner silent and broke the stream off. The exchange's own goroutine uses them.
	watching *mux.Stream
	silent   bool

	halves atomic.Int32 // ends still open: the request's body, the answer
	broken atomic.Bool  // one end failed: close the stream

	mu      sync.Mutex
	bodyErr error // why the request body failed

	// The answer's head and body, made with the exchange.
	resp   http.Response
	answer answerBody
}

// watchOwner starts the owner's watch, on the stream's own timer: past the request timeout,
// a stream whose owner has not been heard from lately is broken off (the answer is a 504);
// one whose owner is heard from is left to the owner's own timeouts.
func (x *exchange) watchOwner() {
	if x.timeout <= 0 {
		return
	}
	if s, ok := x.ac.c.(*mux.Stream); ok {
		s.Watch(x.timeout, ownerRecheck)
		x.watching = s
	}
}

// endWatch ends the owner's watch, once the answer's head has come or the exchange failed
// (a second call does nothing); true: the watch had broken the stream off.
func (x *exchange) endWatch() bool {
	if s := x.watching; s != nil {
		x.watching = nil
		x.silent = s.Unwatch()
	}
	return x.silent
}

// unwatch ends the owner's watch.
func (x *exchange) unwatch() { x.endWatch() }

// ownerSilent reports whether the exchange failed on an owner that has gone silent: found so
// by the watch, or its session given up for want of an answer to a ping.
func (x *exchange) ownerSilent() bool {
	if x.silent {
		return true
	}
	s, ok := x.ac.c.(*mux.Stream)
	return ok && s.PeerSilent()
}

// run sends the request (the hello first, on a new stream) and reads the answer's head.
func (x *exchange) run(secret string, head []byte, dst http.Header) (*http.Response, error) {
	req, ac := x.req, x.ac
	// The request's context (client gone) interrupts the stream.
	x.stop = context.AfterFunc(req.Context(), func() { ac.c.SetDeadline(time.Unix(1, 0)) })
	if ac.peerVersion == 0 {
		// A new stream: the hello first, in the version the owner is thought to speak.
		ac.peerVersion = x.p.helloVersion(x.peer)
		var b [64]byte
		if ac.peerVersion == peerwire.VersionBare {
			ac.bw.Write(peerwire.AppendHello(b[:0], secret))
		} else {
			ac.bw.Write(peerwire.AppendVersionHello(b[:0], ac.peerVersion, secret))
			ac.peerReply = true
		}
	}
	ac.bw.Write(head)
	x.watchOwner()
	if x.body == nil {
		ac.bw.Write(emptyEnd)
	} else {
		x.halves.Store(2)
	}
	pending := ac.bw.Buffered()
	if err := ac.bw.Flush(); err != nil {
		x.unsent = ac.bw.Buffered() == pending && mux.ClosedBeforeWrite(err) // this write sent nothing
		// An owner that drains may read the request, answer it and close its session before
		// yamux tells this write that its bytes have left: an answer already here is the
		// answer (reading a broken stream returns at once).
		if x.body == nil {
			if resp, rerr := x.readHead(dst); rerr == nil && !x.endWatch() {
				return resp, nil
			}
		}
		x.unwatch()
		x.stop()
		return nil, err
	}
	if x.body != nil {
		if ac.peerReply && !x.p.known(x.peer, ac.peerVersion) {
			// An owner not heard speaking this version lately may refuse the hello: the
			// body waits for its reply, so that it can go again on a new stream.
			if err := x.readReply(); err != nil {
				x.unwatch()
				x.stop()
				return nil, err
			}
		}
		x.bodySent = true
		go x.sendBody()
	}
	resp, err := x.readHead(dst)
	if err == nil && x.endWatch() {
		// The watch broke the stream off as the answer came: the answer cannot be read
		// (send closes the stream).
		err = errOwnerSilent
	}
	if err != nil {
		x.unwatch()
		x.stop()
		x.mu.Lock()
		if x.bodyErr != nil {
			err = x.bodyErr // the client's body broke: 400 or 408, not 502
		}
		x.mu.Unlock()
		return nil, err
	}
	return resp, nil
}

// appendRequestHead appends the head frame of req, a client's request, with its header as
// ReverseProxy's Rewrite with SetXForwarded would send it (appendForwardHeader); up is the
// protocol it asks to switch to ("": none).
func appendRequestHead(b []byte, req *http.Request, hasBody bool, up string) []byte {
	var flags uint64
	if req.Context().Value(timedKey{}) != nil {
		flags |= peerwire.Timed
	}
	length := req.ContentLength
	if !hasBody {
		length = 0
	} else if length == 0 {
		length = -1
	}
	start := len(b)
	b = peerwire.BeginFrame(b, peerwire.FrameRequest)
	b = binary.AppendUvarint(b, flags)
	b = peerwire.AppendString(b, req.Method)
	b = peerwire.AppendString(b, httprules.OutboundURI(req.URL))
	b = peerwire.AppendString(b, req.Host)
	b = binary.AppendVarint(b, length)
	b = appendForwardHeader(b, req, up)
	names := make([]string, 0, len(req.Trailer))
	for k := range req.Trailer {
		names = append(names, k)
	}
	return peerwire.EndFrame(peerwire.AppendNames(b, names), start)
}

// appendForwardHeader appends the header block a forwarded request carries: the client's
// header without its hop-by-hop fields (and those its Connection names), its forwarded
// fields and Expect (answered here), then the forwarded fields forwardedOf decides, and for
// an upgrade to up, the fields that ask for it.
func appendForwardHeader(b []byte, req *http.Request, up string) []byte {
	h := req.Header
	skip := httprules.Hops(h["Connection"], true)
	te := httprules.HasToken(h["Te"], "trailers")
	fw := forwardedOf(req)
	n := fw.Count()
	if te {
		n++
	}
	if up != "" {
		n += 2
	}
	b = peerwire.AppendFields(b, h, skip, n)
	if te {
		b = peerwire.AppendString(peerwire.AppendString(b, "Te"), "trailers")
	}
	if up != "" {
		b = peerwire.AppendString(peerwire.AppendString(b, "Connection"), "Upgrade")
		b = peerwire.AppendString(peerwire.AppendString(b, "Upgrade"), up)
	}
	fw.Each(func(k, v string) { b = peerwire.AppendString(peerwire.AppendString(b, k), v) })
	return b
}

// sendBody sends the request body as data frames, then its end frame with the trailers.
func (x *exchange) sendBody() {
	buf := buffers.Get()
	defer buffers.Put(buf)
	body := x.body
	var err error
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err = peerwire.WriteData(x.ac.bw, buf[:n]); err == nil {
				err = x.ac.bw.Flush()
			}
			if err != nil {
				break
			}
		}
		if rerr == io.EOF {
			b := peerwire.AppendEnd(nil, x.req.Trailer) // the trailers the client's body ended with
			if _, err = x.ac.bw.Write(b); err == nil {
				err = x.ac.bw.Flush()
			}
			break
		}
		if rerr != nil {
			x.mu.Lock()
			x.bodyErr = rerr
			x.mu.Unlock()
			err = rerr
			break
		}
	}
	x.done(err == nil)
	if err != nil {
		x.abort()
	}
}

// abort breaks the stream off: the owner sees it closed, a blocked read or write returns.
func (x *exchange) abort() {
	x.ac.c.SetDeadline(time.Unix(1, 0))
	x.ac.c.Close()
}

// done closes one end of the exchange; the last one returns the stream to the pool, or
// closes it if an end failed.
func (x *exchange) done(ok bool) {
	if !ok {
		x.broken.Store(true)
	}
	if x.halves.Add(-1) != 0 {
		return
	}
	if x.stop() && !x.broken.Load() {
		x.t.put(x.ac)
		return
	}
	x.ac.c.Close()
}

// readHead reads the answer's head, its header into dst (nil: a new one): a response, or
// an upgrade's raw tunnel. Interim answers before it go to x.interim, at most maxInterim.
func (x *exchange) readHead(dst http.Header) (*http.Response, error) {
	br := x.ac.br
	if err := x.readReply(); err != nil {
		return nil, err
	}
	budget := peerwire.MaxResponseHead // for the interim answers and the head together
	var s string
	for interims := 0; s == ""; {
		typ, n, err := peerwire.ReadFrameHeader(br)
		if err != nil {
			if interims > 0 {
				err = errors.Join(errAnswerStarted, err)
			}
			return nil, err
		}
		switch typ {
		case peerwire.FrameResponse:
			if s, err = peerwire.ReadPayload(br, n, budget); err != nil {
				return nil, errors.Join(errAnswerStarted, err)
			}
			if s == "" {
				return nil, errors.Join(errAnswerStarted, peerwire.ErrFrame)
			}
		case peerwire.FrameUpgrade:
			return x.readUpgrade()
		case peerwire.FrameInterim:
			if x.ac.peerVersion < peerwire.VersionInterim {
				return nil, errors.Join(errAnswerStarted, peerwire.ErrFrame)
			}
			if interims++; interims > maxInterim {
				return nil, errors.Join(errAnswerStarted, errTooManyInterim)
			}
			p, err := peerwire.ReadPayload(br, n, budget)
			if err != nil {
				return nil, errors.Join(errAnswerStarted, err)
			}
			budget -= n
			code, h, err := peerwire.DecodeInterim(p)
			if err != nil {
				return nil, errors.Join(errAnswerStarted, err)
			}
			if x.interim != nil {
				x.interim(code, h)
			}
		default:
			return nil, errors.Join(errAnswerStarted, peerwire.ErrFrame)
		}
	}
	code, h, trailer, length, err := peerwire.DecodeAnswerHead(s, dst)
	if err != nil {
		return nil, errors.Join(errAnswerStarted, err)
	}
	if length >= 0 {
		if _, ok := h["Content-Length"]; !ok {
			h["Content-Length"] = []string{strconv.FormatInt(length, 10)}
		}
	}
	resp := &x.resp
	*resp = http.Response{
		StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, ContentLength: length, Trailer: trailer, Request: x.req,
	}
	x.answer = answerBody{Body: peerwire.Body{R: br, Trailer: &resp.Trailer}, x: x}
	resp.Body = &x.answer
	return resp, nil
}

// readReply reads the owner's reply to a stream's versioned hello, once, before the first
// answer: the version it agrees to, or a refusal before it read the request (a
// versionRefusal).
func (x *exchange) readReply() error {
	ac := x.ac
	if !ac.peerReply {
		return nil
	}
	ac.peerReply = false
	typ, n, err := peerwire.ReadFrameHeader(ac.br)
	if err != nil {
		return err
	}
	if typ != peerwire.FrameVersion {
		// A version 1 build answers a hello it does not know 403, and closes the stream.
		return &versionRefusal{theirs: peerwire.VersionBare, asked: ac.peerVersion}
	}
	p, err := peerwire.ReadPayload(ac.br, n, maxHello)
	if err != nil {
		return errors.Join(errAnswerStarted, err)
	}
	v, _, err := peerwire.DecodeVersionHello(p)
	if err != nil {
		return errors.Join(errAnswerStarted, err)
	}
	if v != ac.peerVersion {
		return &versionRefusal{theirs: v, asked: ac.peerVersion}
	}
	x.p.learn(x.peer, v)
	return nil
}

// readUpgrade reads the owner's answer to an upgrade, sent as HTTP/1.1 on the raw stream;
// a 101's body is the tunnel itself.
func (x *exchange) readUpgrade() (*http.Response, error) {
	resp, err := http.ReadResponse(x.ac.br, x.req)
	if err != nil {
		return nil, errors.Join(errAnswerStarted, err)
	}
	x.stop() // the tunnel runs on unbounded, as after a local upgrade
	t := &tunnelConn{Conn: x.ac.c, br: x.ac.br}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = t
	} else {
		resp.Body = &closeWith{ReadCloser: resp.Body, c: t}
	}
	return resp, nil
}

// closeWith closes c with the body.
type closeWith struct {
	io.ReadCloser
	c io.Closer
}

func (b *closeWith) Close() error {
	b.ReadCloser.Close()
	return b.c.Close()
}

// answerBody is an answer's body: once read to its end frame, its half of the exchange is
// complete; closed before that, the stream is broken off.
type answerBody struct {
	peerwire.Body
	x    *exchange
	once sync.Once
}

func (b *answerBody) Read(p []byte) (int, error) {
	n, err := b.Body.Read(p)
	if err != nil {
		b.release()
	}
	return n, err
}

func (b *answerBody) Close() error {
	b.release()
	return nil
}

func (b *answerBody) release() {
	b.once.Do(func() {
		ok := b.Complete() && !b.Closing()
		if !b.Complete() {
			b.x.abort()
		} else {
			if b.x.halves.Load() > 1 {
				// The owner answered before it had the whole body: it closes the stream,
				// and the body need not be sent on.
				b.x.abort()
				ok = false
			}
		}
		b.x.done(ok)
	})
}

// emptyEnd is the end frame of a request without a body or trailer.
var emptyEnd = peerwire.AppendEnd(nil, nil)
