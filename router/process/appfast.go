package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"mime"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/olio-dev/olio/router/internal/httprules"
)

// The app leg: every request to the app — any method, with or without a body, an upgrade —
// goes through one engine. The request's head is written with fasthttp's request writer (no
// header maps, no per-request copies of the request) over appTransport's pool of keep-alive
// connections, with its retry rule and the same context hook (client gone,
// --request-timeout); a body streams to the app on a writer goroutine while the answer is
// read, as http.Transport's write loop does. The answer's head is read by fasthttp's parser
// or, when plainHead says fasthttp would read it differently (bare LF, interim answers, a
// 101, a huge head), by net/http's: both give an appAnswer, written to the client by one
// writer with ReverseProxy's rules (hop-by-hop fields dropped, trailers, flushed at once when
// its length is unknown or it is an event stream). A 101 hands the connection to the
// upgrade tunnel (upgrades.go).

// appRequest writes into out the head of the request ReverseProxy would send for req
// (hop-by-hop headers and Expect dropped, the forwarded fields as forwardedOf decides, the
// Host kept, an upgrade's Connection and Upgrade put back) and the framing of its body as
// http.Transport writes it. It returns whether a body follows, and whether chunked.
func appRequest(out *fasthttp.Request, req *http.Request, port int) (body, chunked bool) {
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
		case "Host", "Expect", "Content-Length", httprules.HeaderForwarded, httprules.HeaderXFF, httprules.HeaderXFHost, httprules.HeaderXFProto:
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
	if up := upgradeType(req.Header); up != "" {
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", up)
	}
	fw := forwardedOf(req)
	fw.Each(func(k, v string) { out.Header.Set(k, v) })
	// The body's framing, as http.Transport writes it: a length, or chunked when the client's
	// was; an empty POST, PUT or PATCH says Content-Length: 0.
	body = req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0
	switch {
	case body && req.ContentLength > 0:
		out.Header.Set("Content-Length", strconv.FormatInt(req.ContentLength, 10))
	case body:
		chunked = true
		out.Header.Set("Transfer-Encoding", "chunked")
		if len(req.Trailer) > 0 {
			out.Header.Set("Trailer", strings.Join(slices.Sorted(maps.Keys(req.Trailer)), ","))
		}
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		out.Header.Set("Content-Length", "0")
	}
	return body, chunked
}

// appAnswer is the app's answer as one of the two parsers read its head: net/http's into
// std, or, when std is nil, fasthttp's into fast.
type appAnswer struct {
	fast *fasthttp.Response
	std  *http.Response
}

func (a *appAnswer) status() int {
	if a.std != nil {
		return a.std.StatusCode
	}
	return a.fast.StatusCode()
}

// serveApp serves req through inst's app: the one engine of the app leg.
func (r *Router) serveApp(w http.ResponseWriter, req *http.Request, inst *instance) {
	if up := upgradeType(req.Header); !printable(up) {
		r.localError(w, req, fmt.Errorf("router: the client asked to switch to the invalid protocol %q", up), inst)
		return
	}
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	hasBody, chunked := appRequest(out, req, inst.port)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	var (
		conn *appConn
		stop func() bool
		ans  = appAnswer{fast: resp}
		body *bodyWriter
	)
	defer func() { body.end() }()
	err := inst.transport.exchange(req, func(ac *appConn) error {
		// The request's context (client gone, answer timeout) interrupts the connection.
		stop = context.AfterFunc(req.Context(), func() { ac.c.SetDeadline(time.Unix(1, 0)) })
		body = nil
		err := out.Header.Write(ac.bw)
		if err == nil && hasBody {
			body = sendBody(ac, req, chunked)
		} else if err == nil {
			err = ac.bw.Flush()
		}
		if err == nil {
			ans.std, err = readAppAnswer(ac, req, resp, func(code int, h http.Header) { passInterim(w, code, h) })
		}
		if err != nil {
			stop()
			if berr := body.failed(); berr != nil {
				return berr // the client's body broke: its error, not the app's
			}
			return err
		}
		conn = ac
		return nil
	})
	switch {
	case err != nil:
		r.localError(w, req, err, inst)
	case ans.status() == http.StatusSwitchingProtocols:
		r.switchProtocols(w, req, ans.std, conn, inst, stop)
	default:
		r.writeAnswer(w, req, &ans, conn, inst, stop, body)
	}
}

// readAppAnswer reads the head of the app's answer from ac: with fasthttp's parser into
// resp, or, for a head plainHead refuses or fasthttp fails on, with net/http's (std).
// Interim answers (1xx but 101) go to interim, at most maxInterim.
func readAppAnswer(ac *appConn, req *http.Request, resp *fasthttp.Response, interim func(int, http.Header)) (std *http.Response, err error) {
	// An answer that has not begun (the app closed an idle connection) may be retried.
	if _, err := ac.br.Peek(1); err != nil {
		return nil, err
	}
	if plainHead(ac.br) {
		resp.StreamBody = true
		resp.SkipBody = req.Method == http.MethodHead
		resp.Header.SetNoDefaultContentType(true)
		if resp.Read(ac.br) == nil {
			return nil, nil
		}
		// fasthttp parses by peeking, so the head is still unread: a broken or timed-out
		// answer fails net/http's parser too, as it always did.
		resp.Reset()
	}
	ac.limit(maxAnswerHeader)
	defer ac.limit(math.MaxInt64)
	std, err = http.ReadResponse(ac.br, req)
	n := 0 // interim answers passed on
	for ; err == nil && std.StatusCode >= 100 && std.StatusCode < 200 && std.StatusCode != http.StatusSwitchingProtocols; n++ {
		if n == maxInterim {
			return nil, errors.Join(errAnswerStarted, errTooManyInterim)
		}
		interim(std.StatusCode, std.Header)
		ac.limit(maxAnswerHeader)
		std, err = http.ReadResponse(ac.br, req)
	}
	if err != nil {
		if std != nil || n > 0 || ac.br.Buffered() > 0 {
			err = errors.Join(errAnswerStarted, err)
		}
		return nil, err
	}
	return std, nil
}

// passInterim passes an interim answer (1xx) on to the client, as ReverseProxy does, but
// the header already in w's, meant for the final answer, stays for it.
func passInterim(w http.ResponseWriter, code int, h http.Header) {
	wh := w.Header()
	var kept http.Header
	if len(wh) > 0 {
		kept = wh.Clone()
	}
	for k, vs := range h {
		wh[k] = append(wh[k], vs...)
	}
	w.WriteHeader(code)
	clear(wh)
	for k, vs := range kept {
		wh[k] = vs
	}
}

// bodyWriter sends the client's body to the app on a goroutine of its own, as
// http.Transport's write loop does, while the caller reads the answer: an app may answer
// before it has read the body (a 413), or stream its answer while the body comes.
type bodyWriter struct {
	done chan struct{} // closed when the writer has ended
	err  error         // why it failed (set before done closes)
	// over is set when the request has been served: the client's body is no longer read
	// (net/http forbids it once the handler has returned), as ReverseProxy's noopCloseReader.
	over atomic.Bool
}

// errBodyOver is a read of the client's body after its request was served.
var errBodyOver = errors.New("router: the request was served before its body was sent")

// Read reads the client's body, until the request has been served.
func (b *bodyWriter) read(body io.Reader, p []byte) (int, error) {
	if b.over.Load() {
		return 0, errBodyOver
	}
	return body.Read(p)
}

// bodyReader is the client's body as the writer reads it.
type bodyReader struct {
	b    *bodyWriter
	body io.Reader
}

func (r bodyReader) Read(p []byte) (int, error) { return r.b.read(r.body, p) }

// end marks the request served: the writer stops reading the client's body.
func (b *bodyWriter) end() {
	if b != nil {
		b.over.Store(true)
	}
}

// sendBody starts writing req's body to ac, whose head is in ac.bw.
func sendBody(ac *appConn, req *http.Request, chunked bool) *bodyWriter {
	b := &bodyWriter{done: make(chan struct{})}
	go b.write(ac, req, chunked)
	return b
}

func (b *bodyWriter) write(ac *appConn, req *http.Request, chunked bool) {
	err := writeBody(ac.bw, bodyReader{b, clientBody{req.Body}}, req.Trailer, chunked)
	b.err = err
	close(b.done)
	var be *bodyError
	if errors.As(err, &be) || errors.Is(err, errBodyTimeout) {
		// The client's body broke: the app's request can never be whole. The caller, woken
		// by the close, answers the client for it (failBody).
		ac.c.Close()
	}
}

// writeBody writes req's body (its head already in bw) and flushes: as it is, or chunked,
// each chunk flushed as it comes, with the client's trailer after the last.
func writeBody(bw *bufio.Writer, body io.Reader, trailer http.Header, chunked bool) error {
	if !chunked {
		if _, err := bw.ReadFrom(body); err != nil {
			return err
		}
		return bw.Flush()
	}
	buf := buffers.Get()
	defer buffers.Put(buf)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			bw.WriteString(strconv.FormatInt(int64(n), 16))
			bw.WriteString("\r\n")
			bw.Write(buf[:n])
			bw.WriteString("\r\n")
			if ferr := bw.Flush(); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	bw.WriteString("0\r\n")
	for k, vs := range trailer {
		for _, v := range vs {
			bw.WriteString(k + ": " + v + "\r\n")
		}
	}
	bw.WriteString("\r\n")
	return bw.Flush()
}

// finished reports whether the writer has sent the whole body (true for none).
func (b *bodyWriter) finished() bool {
	if b == nil {
		return true
	}
	select {
	case <-b.done:
		return b.err == nil
	default:
		return false
	}
}

// failed returns the writer's error if it has ended on one of the client's body.
func (b *bodyWriter) failed() error {
	if b == nil {
		return nil
	}
	select {
	case <-b.done:
	default:
		return nil
	}
	var be *bodyError
	if errors.As(b.err, &be) || errors.Is(b.err, errBodyTimeout) {
		return b.err
	}
	return nil
}

// writeAnswer writes the app's answer a, read from ac, to the client, as ReverseProxy
// would, then returns ac to the pool or closes it. body is the request body's writer (nil:
// none): a connection whose writer has not finished when the answer has is not reused.
func (r *Router) writeAnswer(w http.ResponseWriter, req *http.Request, a *appAnswer, ac *appConn, inst *instance, stop func() bool, body *bodyWriter) {
	status := a.status()
	answered(&http.Response{StatusCode: status, Request: req})
	// Whether the app answered before it had the whole body: it may not read the rest.
	early := !body.finished()
	var (
		trailers []string
		flush    bool
		keep     bool
		src      io.Reader
	)
	if a.std != nil {
		trailers = copyStdHeader(w.Header(), a.std)
		flush = a.std.ContentLength == -1 || eventStream(a.std.Header.Get("Content-Type"))
		keep = !a.std.Close && !hasToken(a.std.Header["Connection"], "close")
		src = a.std.Body
	} else {
		trailers = copyFastHeader(w.Header(), a.fast)
		flush = streamed(a.fast)
		keep = !a.fast.ConnectionClose() && a.fast.Header.ContentLength() != -2
		if a.fast.IsBodyStream() {
			src = a.fast.BodyStream()
		}
	}
	w.WriteHeader(status)
	if flush || len(trailers) > 0 {
		// The header goes at once to a streaming client; an answer with trailers goes
		// chunked (net/http would add a Content-Length to a short one).
		http.NewResponseController(w).Flush()
	}
	var err error
	if src != nil {
		err = copyAnswerBody(w, src, flush)
	} else {
		_, err = w.Write(a.fast.Body())
	}
	keep = keep && err == nil && !early && body.finished()
	if !keep {
		ac.c.Close()
	}
	if a.std != nil {
		a.std.Body.Close()
	} else if a.fast.CloseBodyStream() != nil {
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
	if a.std != nil {
		writeTrailers(w, trailers, stdTrailers(a.std.Trailer))
	} else {
		writeTrailers(w, trailers, fastTrailers(a.fast))
	}
}

// copyStdHeader copies the end-to-end headers of an answer net/http's parser read into h
// and returns the names of the trailers it announces, as ReverseProxy does.
func copyStdHeader(h http.Header, resp *http.Response) (trailers []string) {
	skip := httprules.Hops(resp.Header["Connection"], false)
	for k, vs := range resp.Header {
		if !skip.Drop(k) {
			h[k] = append(h[k], vs...)
		}
	}
	for k := range resp.Trailer {
		trailers = append(trailers, k)
	}
	if len(trailers) > 0 {
		h["Trailer"] = []string{strings.Join(trailers, ", ")}
	}
	return trailers
}

// field is one header field.
type field struct{ k, v string }

// stdTrailers lists the trailer net/http's parser read.
func stdTrailers(t http.Header) []field {
	var got []field
	for k, vs := range t {
		for _, v := range vs {
			got = append(got, field{k, v})
		}
	}
	return got
}

// fastTrailers lists the trailer fasthttp's parser read.
func fastTrailers(resp *fasthttp.Response) []field {
	raw := resp.Header.TrailerHeader() // the trailer section as received, "\r\n" when none
	if len(raw) <= 2 {
		return nil
	}
	var got []field
	for line := range strings.SplitSeq(string(raw), "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		got = append(got, field{textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k)), strings.TrimSpace(v)})
	}
	return got
}

// writeTrailers passes on the trailers that came after the answer's body, as ReverseProxy
// does: as declared trailers when the answer announced them all (declared), else each with
// http.TrailerPrefix, after a flush that makes the answer chunked.
func writeTrailers(w http.ResponseWriter, declared []string, got []field) {
	if len(got) == 0 {
		return
	}
	prefix := ""
	for _, f := range got {
		if !slices.Contains(declared, f.k) {
			http.NewResponseController(w).Flush()
			prefix = http.TrailerPrefix
			break
		}
	}
	h := w.Header()
	for _, f := range got {
		h.Add(prefix+f.k, f.v)
	}
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
	return resp.Header.ContentLength() < 0 || eventStream(b2s(resp.Header.ContentType()))
}

// eventStream reports whether the media type ct is text/event-stream, as ReverseProxy reads it.
func eventStream(ct string) bool {
	const sse = "text/event-stream"
	if len(ct) < len(sse) || !strings.EqualFold(ct[:len(sse)], sse) {
		return false
	}
	base, _, _ := mime.ParseMediaType(ct)
	return base == sse
}

// b2s views b as a string without a copy; b must not change while it is used.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// copyAnswerBody streams the answer's body to w, flushing each read when flush.
func copyAnswerBody(w http.ResponseWriter, body io.Reader, flush bool) error {
	rc := http.NewResponseController(w)
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

// switchProtocols joins the client to the app after its 101, as ReverseProxy does: the
// answer goes out on the client's hijacked connection, then bytes are copied both ways
// (the app's side through the tunnel a hand-over can end, tunnelUpgrade) until either side
// ends. The app's connection is never reused.
func (r *Router) switchProtocols(w http.ResponseWriter, req *http.Request, resp *http.Response, ac *appConn, inst *instance, stop func() bool) {
	stop() // the request's end closes the app's side below
	defer ac.c.Close()
	resp.Request, resp.Body = req, upgradedApp{ac}
	answered(resp) // a 101: the upgrade's counts, and the tunnel a hand-over can end
	if got, asked := upgradeType(resp.Header), upgradeType(req.Header); !printable(got) || !strings.EqualFold(got, asked) {
		r.localError(w, req, fmt.Errorf("router: the app switched to protocol %q when %q was asked for", got, asked), inst)
		return
	}
	back := resp.Body.(io.ReadWriteCloser)
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		r.localError(w, req, fmt.Errorf("router: cannot switch protocols: %w", err), inst)
		return
	}
	defer conn.Close()
	defer context.AfterFunc(req.Context(), func() { back.Close() })()
	defer back.Close()
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = append(h[k], vs...)
	}
	resp.Header, resp.Body = h, nil // Write sends the header alone
	if err := resp.Write(brw); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go tunnelCopy(conn, back, done)
	go tunnelCopy(back, conn, done)
	<-done // either side ended: the deferred closes end the other
}

// upgradedApp is the app's side of an upgraded connection: what its reader holds first.
type upgradedApp struct{ ac *appConn }

func (u upgradedApp) Read(p []byte) (int, error)  { return u.ac.br.Read(p) }
func (u upgradedApp) Write(p []byte) (int, error) { return u.ac.c.Write(p) }
func (u upgradedApp) Close() error                { return u.ac.c.Close() }
