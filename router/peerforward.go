package router

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// peerTransport forwards requests to their owners over mux streams, in the peer leg's frames
// (peerwire.go). The owner's index is the request's ownerKey, its one carrier. Streams are
// kept for the next request, one pool per peer.
type peerTransport struct {
	r *Router

	mu    sync.Mutex
	peers map[int]*appTransport // only their pools of streams are used
}

func newPeerTransport(r *Router) *peerTransport {
	return &peerTransport{r: r, peers: map[int]*appTransport{}}
}

// pool returns the pool of streams to peer i.
func (p *peerTransport) pool(i int) *appTransport {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.peers[i]
	if !ok {
		t = &appTransport{dial: func(ctx context.Context) (net.Conn, error) { return p.r.openPeer(ctx, i) }}
		p.peers[i] = t
	}
	return t
}

// CloseIdleConnections closes the idle streams to every peer.
func (p *peerTransport) CloseIdleConnections() {
	p.mu.Lock()
	peers := p.peers
	p.peers = map[int]*appTransport{}
	p.mu.Unlock()
	for _, t := range peers {
		t.CloseIdleConnections()
	}
}

// RoundTrip implements http.RoundTripper.
func (p *peerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	i, ok := req.Context().Value(ownerKey{}).(int)
	if !ok {
		return nil, errors.New("router: a forwarded request without its owner")
	}
	t := p.pool(i)
	hasBody := req.Body != nil && req.Body != http.NoBody
	var sent error // the first attempt's failure, when the owner may have acted on the request
	for attempt := 0; ; attempt++ {
		ac, reused, err := t.get(req.Context(), attempt > 0)
		if err == nil && reused && hasBody && !alive(ac) {
			ac.c.Close()
			ac, reused, err = t.get(req.Context(), true)
		}
		if err != nil {
			if sent != nil {
				return nil, sent
			}
			return nil, err
		}
		x := &exchange{t: t, ac: ac, req: req}
		resp, err := x.run(p.r.conf().Secret, hasBody)
		if err == nil {
			return resp, nil
		}
		ac.c.Close()
		// A stream of a peer that has restarted, or that the owner closed while idle, fails
		// before any answer: try once more on a new one. A body already begun cannot be.
		if reused && attempt == 0 && req.Context().Err() == nil && !errors.Is(err, errAnswerStarted) && !x.bodyBegun {
			if !replayable(req) {
				sent = err
			}
			continue
		}
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
}

// alive reports whether a pooled stream is still open at the owner's end: nothing was sent
// on it while idle (the owner closes idle streams when it shuts down). Checked before a
// request whose body could not be sent again.
func alive(ac *appConn) bool {
	if ac.br.Buffered() > 0 {
		return false
	}
	ac.c.SetReadDeadline(time.Unix(1, 0))
	_, err := ac.br.Peek(1)
	ac.c.SetReadDeadline(time.Time{})
	return isTimeout(err)
}

// exchange is one request and its answer on one stream. The stream goes back to the pool
// once both ends of it are complete: the request's end frame sent and the answer's read.
type exchange struct {
	t   *appTransport
	ac  *appConn
	req *http.Request

	stop      func() bool // stops the request context's watch on the stream
	bodyBegun bool        // the body sender has started: the request cannot be sent again

	mu      sync.Mutex
	halves  int   // ends still open: the request's body, the answer
	broken  bool  // one end failed: close the stream
	bodyErr error // why the request body failed
}

// run sends the request and reads the answer's head.
func (x *exchange) run(secret string, hasBody bool) (*http.Response, error) {
	req, ac := x.req, x.ac
	// The request's context (client gone, answer timeout) interrupts the stream.
	x.stop = context.AfterFunc(req.Context(), func() { ac.c.SetDeadline(time.Unix(1, 0)) })
	if ac.greeted {
		secret = "" // the owner knows this stream
	}
	ac.greeted = true
	buf := appendRequestHead(make([]byte, 0, 512), req, secret)
	x.halves = 1
	if !hasBody {
		buf = appendEnd(buf, nil)
	} else {
		x.halves = 2
	}
	ac.bw.Write(buf)
	if err := ac.bw.Flush(); err != nil {
		x.stop()
		return nil, err
	}
	if hasBody {
		x.bodyBegun = true
		go x.sendBody()
	}
	resp, err := x.readHead()
	if err != nil {
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

// appendRequestHead appends req's head frame.
func appendRequestHead(b []byte, req *http.Request, secret string) []byte {
	var flags uint64
	if req.Context().Value(timedKey{}) != nil {
		flags |= peerTimed
	}
	length := req.ContentLength
	if req.Body == nil || req.Body == http.NoBody {
		length = 0
	} else if length == 0 {
		length = -1
	}
	b = beginFrame(b, frameRequest)
	b = binary.AppendUvarint(b, flags)
	b = appendString(b, secret)
	b = appendString(b, req.Method)
	b = appendString(b, req.URL.RequestURI())
	b = appendString(b, req.Host)
	b = binary.AppendVarint(b, length)
	b = appendHeader(b, req.Header, "")
	names := make([]string, 0, len(req.Trailer))
	for k := range req.Trailer {
		names = append(names, k)
	}
	return endFrame(appendNames(b, names), 0)
}

// sendBody sends the request body as data frames, then its end frame with the trailers.
func (x *exchange) sendBody() {
	buf := buffers.Get()
	defer buffers.Put(buf)
	body := x.req.Body
	var err error
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err = writeData(x.ac.bw, buf[:n]); err == nil {
				err = x.ac.bw.Flush()
			}
			if err != nil {
				break
			}
		}
		if rerr == io.EOF {
			b := appendEnd(nil, x.req.Trailer)
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
	body.Close()
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
	x.mu.Lock()
	x.halves--
	x.broken = x.broken || !ok
	last, broken := x.halves == 0, x.broken
	x.mu.Unlock()
	if !last {
		return
	}
	if x.stop() && !broken {
		x.t.put(x.ac)
		return
	}
	x.ac.c.Close()
}

// readHead reads the answer's head: a response, or an upgrade's raw tunnel.
func (x *exchange) readHead() (*http.Response, error) {
	br := x.ac.br
	typ, n, err := readFrameHeader(br)
	if err != nil {
		return nil, err
	}
	switch typ {
	case frameResponse:
	case frameUpgrade:
		return x.readUpgrade()
	default:
		return nil, errors.Join(errAnswerStarted, errFrame)
	}
	s, err := readPayload(br, n, maxResponseHead)
	if err != nil {
		return nil, errors.Join(errAnswerStarted, err)
	}
	d := wireReader{s: s}
	code := int(d.uvarint())
	h := d.header(nil)
	trailer := d.names()
	length := d.varint()
	if err := d.done(); err != nil {
		return nil, errors.Join(errAnswerStarted, err)
	}
	if length >= 0 {
		if _, ok := h["Content-Length"]; !ok {
			h["Content-Length"] = []string{strconv.FormatInt(length, 10)}
		}
	}
	resp := &http.Response{
		StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, ContentLength: length, Trailer: trailer, Request: x.req,
	}
	resp.Body = &answerBody{frameBody: frameBody{br: br, trailer: &resp.Trailer}, x: x}
	return resp, nil
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
	frameBody
	x    *exchange
	once sync.Once
}

func (b *answerBody) Read(p []byte) (int, error) {
	n, err := b.frameBody.Read(p)
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
		ok := b.complete() && !b.closing
		if !b.complete() {
			b.x.abort()
		} else {
			b.x.mu.Lock()
			pending := b.x.halves > 1
			b.x.mu.Unlock()
			if pending && ok {
				// The owner answered before it had the whole body: it closes the stream,
				// and the body need not be sent on.
				b.x.abort()
				ok = false
			}
		}
		b.x.done(ok)
	})
}
