package process

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/olio-dev/olio/router/internal/httprules"
)

// The app leg's fast path: a GET or HEAD without a body — nearly every request of a
// key-affinity service — is written to the app and its answer read with fasthttp's request
// writer and response parser (no header maps, no per-request copies of the request), over
// the same pool of keep-alive connections, with the same retry rules and the same context
// hook (client gone, --request-timeout) as appTransport. The answer streams to the client as
// ReverseProxy would stream it: flushed at once when its length is unknown or it is an event
// stream. Every other request (a body, an upgrade, another method) takes newLocalProxy.

// fastPath reports whether req takes the fast path.
func fastPath(req *http.Request) bool {
	return (req.Method == http.MethodGet || req.Method == http.MethodHead) &&
		(req.Body == nil || req.Body == http.NoBody) && req.ContentLength <= 0 && len(req.Header["Upgrade"]) == 0
}

// fastRequest writes into out the request ReverseProxy would send for req (newLocalProxy's
// Rewrite): hop-by-hop headers and Expect dropped, the forwarded fields as forwardedOf decides,
// the Host kept.
func fastRequest(out *fasthttp.Request, req *http.Request, port int) {
	out.Header.DisableSpecialHeader() // every header goes out as it came, cookies included
	out.Header.DisableNormalizing()   // net/http already canonicalized the names
	out.Header.SetMethod(req.Method)
	out.Header.SetRequestURI(httprules.OutboundURI(req.URL))
	host := req.Host
	if host == "" {
		host = "127.0.0.1:" + strconv.Itoa(port)
	}
	out.Header.Set("Host", host)
	skip := httprules.Hops(req.Header["Connection"], false)
	for k, vs := range req.Header {
		switch k {
		case "Host", "Expect", httprules.HeaderForwarded, httprules.HeaderXFF, httprules.HeaderXFHost, httprules.HeaderXFProto:
			continue
		}
		if skip.Drop(k) {
			continue
		}
		for _, v := range vs {
			out.Header.Add(k, v)
		}
	}
	for _, v := range req.Header["Te"] {
		if strings.Contains(strings.ToLower(v), "trailers") {
			out.Header.Set("Te", "trailers")
		}
	}
	fw := forwardedOf(req)
	fw.Each(func(k, v string) { out.Header.Set(k, v) })
}

// serveFast serves req through inst's app on the fast path.
func (r *Router) serveFast(w http.ResponseWriter, req *http.Request, inst *instance) {
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	fastRequest(out, req, inst.port)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	var (
		conn  *appConn
		stop  func() bool
		other *http.Response // an answer fasthttp's parser refused, read by net/http's
	)
	err := inst.transport.exchange(req, func(ac *appConn) error {
		// The request's context (client gone, answer timeout) interrupts the connection.
		stop = context.AfterFunc(req.Context(), func() { ac.c.SetDeadline(time.Unix(1, 0)) })
		err := fastExchange(ac, out, resp, req.Method == http.MethodHead)
		switch {
		case isRefused(err):
			other, err = inst.transport.readAnswer(ac, req, stop, func(r *http.Response) {
				// Passed on as ReverseProxy passes them.
				h := w.Header()
				for k, vs := range r.Header {
					h[k] = append(h[k], vs...)
				}
				w.WriteHeader(r.StatusCode)
				clear(h)
			})
			return err
		case err != nil:
			stop()
			return err
		}
		conn = ac
		return nil
	})
	switch {
	case err != nil:
		r.localError(w, req, err, inst)
	case other != nil:
		// ReverseProxy writes it, as it writes every answer off the fast path.
		p := *inst.proxy
		p.Transport = readyAnswer{other}
		p.ServeHTTP(w, req)
	default:
		r.writeFast(w, req, resp, conn, inst, stop)
	}
}

// writeFast writes the app's answer resp, read from ac, to the client, as ReverseProxy
// would, then returns ac to the pool or closes it.
func (r *Router) writeFast(w http.ResponseWriter, req *http.Request, resp *fasthttp.Response, ac *appConn, inst *instance, stop func() bool) {
	answered(&http.Response{StatusCode: resp.StatusCode(), Request: req})
	trailers := copyFastHeader(w.Header(), resp)
	w.WriteHeader(resp.StatusCode())
	flush := streamed(resp)
	if flush || len(trailers) > 0 {
		// The header goes at once to a streaming client; an answer with trailers goes
		// chunked (net/http would add a Content-Length to a short one).
		http.NewResponseController(w).Flush()
	}
	err := copyFastBody(w, resp, flush)
	keep := err == nil && !resp.ConnectionClose() && resp.Header.ContentLength() != -2
	if !keep {
		ac.c.Close()
	}
	if resp.CloseBodyStream() != nil {
		keep = false
	}
	// stop reports false when the context already fired and poisoned the deadline.
	if stop() && keep {
		inst.transport.put(ac)
	} else {
		ac.c.Close()
	}
	if err != nil {
		if errors.Is(err, errAnswerStarted) { // not the client going away
			r.errorLog.Printf("olio: the app's answer to %s broke off: %v", req.URL.Path, err)
		}
		// As ReverseProxy: the client must see a broken answer, not a short one. Only a real
		// server recovers that panic; a fan-out leg (its own goroutine) just ends.
		if req.Context().Value(http.ServerContextKey) != nil {
			panic(http.ErrAbortHandler)
		}
		return
	}
	writeFastTrailers(w, resp, trailers)
}

// writeFastTrailers passes on the trailers that came after the answer's body, as
// ReverseProxy does: as declared trailers when the answer announced them all (declared),
// else each with http.TrailerPrefix, after a flush that makes the answer chunked.
func writeFastTrailers(w http.ResponseWriter, resp *fasthttp.Response, declared []string) {
	raw := resp.Header.TrailerHeader() // the trailer section as received, "\r\n" when none
	if len(raw) <= 2 {
		return
	}
	type field struct{ k, v string }
	var got []field
	undeclared := false
	for line := range strings.SplitSeq(string(raw), "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k))
		got = append(got, field{k, strings.TrimSpace(v)})
		if !slices.Contains(declared, k) {
			undeclared = true
		}
	}
	prefix := ""
	if undeclared {
		http.NewResponseController(w).Flush()
		prefix = http.TrailerPrefix
	}
	h := w.Header()
	for _, f := range got {
		h.Add(prefix+f.k, f.v)
	}
}

// readyAnswer is a RoundTripper that returns an answer already read.
type readyAnswer struct{ resp *http.Response }

func (a readyAnswer) RoundTrip(req *http.Request) (*http.Response, error) {
	a.resp.Request = req
	return a.resp, nil
}

// refusedError is fasthttp's parser failing on the header of an answer: too large for its
// buffer, a form it rejects and net/http takes (a repeated equal Content-Length), or a
// broken one. It parses by peeking, so the header is still unread: net/http's parser reads
// it instead, and the answer is served, or fails, as it did before the fast path.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// fastExchange writes out to the app and reads the header of its answer (the body is read
// as it streams to the client); interim answers (1xx) are dropped.
func fastExchange(ac *appConn, out *fasthttp.Request, resp *fasthttp.Response, head bool) error {
	if err := out.Write(ac.bw); err != nil {
		return err
	}
	if err := ac.bw.Flush(); err != nil {
		return err
	}
	// An answer that has not begun (the app closed an idle connection) may be retried.
	if _, err := ac.br.Peek(1); err != nil {
		return err
	}
	if !plainHead(ac.br) {
		return &refusedError{errors.New("router: an answer header for net/http's parser")}
	}
	resp.StreamBody = true
	resp.SkipBody = head
	resp.Header.SetNoDefaultContentType(true)
	if err := resp.Read(ac.br); err != nil {
		// A broken or timed-out answer fails net/http's parser too, as it always did.
		return &refusedError{err}
	}
	return nil
}

// plainHead waits until the whole header of the answer is in br's buffer and reports whether
// fasthttp's parser reads it as net/http's does: a final answer (not 1xx) whose every line
// ends in CRLF, with no bare CR, no folded line and no whitespace before a field's colon.
// Anything else — bare LF line ends, which fasthttp would wait on for more, an interim
// answer, a header larger than the buffer, a read error — is left to net/http's parser, so
// the client gets the answer ReverseProxy would give.
func plainHead(br *bufio.Reader) bool {
	scanned := 0
	line, colon := 0, false // where the current line starts; whether it has had its colon
	for {
		b, err := br.Peek(max(br.Buffered(), scanned+1))
		for i := scanned; i < len(b); i++ {
			c := b[i]
			if i > 0 && b[i-1] == '\r' && c != '\n' {
				return false
			}
			switch {
			case c == '\n':
				if i == 0 || b[i-1] != '\r' {
					return false
				}
				if i == line+1 { // the empty line: the end of the head
					return len(b) > 9 && b[9] != '1'
				}
				line, colon = i+1, false
			case line == 0: // the status line
			case c == ' ' || c == '\t':
				if i == line {
					return false // a folded line
				}
			case c == ':' && !colon:
				colon = true
				if i > line && (b[i-1] == ' ' || b[i-1] == '\t') {
					return false
				}
			}
		}
		if err != nil {
			return false
		}
		scanned = len(b)
	}
}

// copyFastHeader copies the answer's end-to-end headers into h and returns the names of
// the trailers it announces.
func copyFastHeader(h http.Header, resp *fasthttp.Response) (trailers []string) {
	var connection []string
	for _, v := range resp.Header.PeekAll("Connection") {
		connection = append(connection, string(v))
	}
	skip := httprules.Hops(connection, false)
	for k, v := range resp.Header.All() {
		name := string(k)
		if name == "Trailer" {
			for tok := range strings.SplitSeq(string(v), ",") {
				if tok = strings.TrimSpace(tok); tok != "" {
					trailers = append(trailers, textproto.CanonicalMIMEHeaderKey(tok))
				}
			}
			continue
		}
		if skip.Drop(name) {
			continue
		}
		h.Add(name, string(v))
	}
	if len(trailers) > 0 {
		h["Trailer"] = []string{strings.Join(trailers, ", ")}
	}
	return trailers
}

// streamed reports whether an answer is flushed to the client as it comes, as ReverseProxy
// does with FlushInterval 0: its length is unknown, or it is an event stream.
func streamed(resp *fasthttp.Response) bool {
	if resp.Header.ContentLength() < 0 {
		return true
	}
	const sse = "text/event-stream"
	ct := resp.Header.ContentType()
	if len(ct) < len(sse) || !bytes.EqualFold(ct[:len(sse)], []byte(sse)) {
		return false
	}
	base, _, _ := mime.ParseMediaType(string(ct))
	return base == sse
}

// copyFastBody streams the answer's body to w, flushing each read when flush.
func copyFastBody(w http.ResponseWriter, resp *fasthttp.Response, flush bool) error {
	if !resp.IsBodyStream() {
		_, err := w.Write(resp.Body())
		return err
	}
	rc := http.NewResponseController(w)
	body := resp.BodyStream()
	buf := buffers.Get()
	defer buffers.Put(buf)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush {
				rc.Flush() // as ReverseProxy, a writer that cannot flush writes on all the same
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return errors.Join(errAnswerStarted, err)
		}
	}
}

// isRefused reports whether fastExchange refused the answer's head to fasthttp's parser
// (a type check, not errors.As, which would put a target on the heap every request).
func isRefused(err error) bool {
	_, ok := err.(*refusedError) //nolint:errorlint // fastExchange returns it unwrapped
	return ok
}
