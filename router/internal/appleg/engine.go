package appleg

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

	"github.com/olio-dev/olio/router/internal/connpool"
	"github.com/olio-dev/olio/router/internal/httprules"
)

// The engine: every request to the app — any method, with or without a body, an upgrade —
// goes through Serve. The request's head is written with fasthttp's request writer (no
// header maps, no per-request copies of the request) over the App's pool of keep-alive
// connections (package connpool), with its retry rule and the same context hook (client
// gone, --request-timeout); a body streams to the app on a writer goroutine while the answer
// is read, as http.Transport's write loop does. The answer's head is read by fasthttp's
// parser or, when plainHead says fasthttp would read it differently (bare LF, interim
// answers, a 101, a huge head), by net/http's: both give an appAnswer, written to the client
// by one writer with ReverseProxy's rules (hop-by-hop fields dropped, trailers, flushed at
// once when its length is unknown or it is an event stream). A 101 is returned to the
// caller, which joins the client to the app's side of the connection.

// appRequest writes into out the head of the request ReverseProxy would send for req
// (hop-by-hop headers and Expect dropped, the forwarded fields fw, the Host kept, an
// upgrade's Connection and Upgrade put back) and the framing of its body as http.Transport
// writes it. It returns whether a body follows, and whether chunked.
func appRequest(out *fasthttp.Request, req *http.Request, port int, fw *httprules.Forwarded) (body, chunked bool) {
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
	if httprules.HasToken(req.Header["Te"], "trailers") {
		out.Header.Set("Te", "trailers")
	}
	if up := httprules.UpgradeType(req.Header); up != "" {
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", up)
	}
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

// Serve sends req to app and writes the app's answer to w, as httputil.ReverseProxy would;
// the app gets the forwarded fields fw. It returns an error when the request failed before
// anything was written to w (the caller answers the client: a retry on the app's
// replacement, 502, 504). A 101 Switching Protocols is not written: it is returned, its Body
// the app's side of the connection (an io.ReadWriteCloser the caller closes), for the caller
// to join the client to it. An answer that breaks off mid-body panics with
// http.ErrAbortHandler under a real server, as ReverseProxy does.
func (l *Leg) Serve(w http.ResponseWriter, req *http.Request, app *App, fw httprules.Forwarded) (*http.Response, error) {
	if up := httprules.UpgradeType(req.Header); !httprules.Printable(up) {
		return nil, fmt.Errorf("router: the client asked to switch to the invalid protocol %q", up)
	}
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	hasBody, chunked := appRequest(out, req, app.port, &fw)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	var (
		conn *connpool.Conn
		stop func() bool
		ans  = appAnswer{fast: resp}
		body *bodyWriter
	)
	defer func() { body.end() }()
	err := app.pool.Exchange(req, func(ac *connpool.Conn) error {
		// The request's context (client gone, answer timeout) interrupts the connection.
		stop = context.AfterFunc(req.Context(), func() { ac.Conn.SetDeadline(time.Unix(1, 0)) })
		body = nil
		err := out.Header.Write(ac.W)
		if err == nil {
			// The head goes at once, before the body is read (as http.Transport flushes the
			// headers of a body it streams): the app sees the request, and may answer it
			// (401, 413), however slowly its body comes.
			err = ac.W.Flush()
		}
		if err == nil && hasBody {
			body = l.sendBody(ac, req, chunked)
		}
		if err == nil {
			ans.std, err = readAppAnswer(ac, req, resp, func(code int, h http.Header) { httprules.PassInterim(w, code, h) })
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
		return nil, err
	case ans.status() == http.StatusSwitchingProtocols && !body.finishedWithin(writeWait):
		// Switched while the request's body was still going: the tunnel's bytes would
		// follow a part of it on the same connection.
		stop()
		conn.Conn.Close()
		return nil, errors.Join(connpool.ErrAnswerStarted, errors.New("appleg: the app switched protocols before it had the request's body"))
	case ans.status() == http.StatusSwitchingProtocols:
		stop() // the request's end closes the app's side (the caller's work)
		ans.std.Request, ans.std.Body = req, upgradedApp{conn}
		return ans.std, nil
	default:
		l.writeAnswer(w, req, &ans, conn, app, stop, body)
		return nil, nil
	}
}

// readAppAnswer reads the head of the app's answer from ac: with fasthttp's parser into
// resp, or, for a head plainHead refuses or fasthttp fails on (and a HEAD's), with
// net/http's (std).
// Interim answers (1xx but 101) go to interim, at most httprules.MaxInterim.
func readAppAnswer(ac *connpool.Conn, req *http.Request, resp *fasthttp.Response, interim func(int, http.Header)) (std *http.Response, err error) {
	// An answer that has not begun (the app closed an idle connection) may be retried.
	if _, err := ac.R.Peek(1); err != nil {
		return nil, err
	}
	// The answer to a HEAD goes to net/http's parser: fasthttp takes one without a length
	// for one that runs to the connection's close, and would not reuse the connection.
	if req.Method != http.MethodHead && plainHead(ac.R) {
		resp.StreamBody = true
		resp.Header.SetNoDefaultContentType(true)
		if resp.Read(ac.R) == nil {
			return nil, nil
		}
		// fasthttp parses by peeking, so the head is still unread: a broken or timed-out
		// answer fails net/http's parser too, as it always did.
		resp.Reset()
	}
	ac.Limit(connpool.MaxAnswerHeader)
	defer ac.Limit(math.MaxInt64)
	std, err = http.ReadResponse(ac.R, req)
	n := 0 // interim answers passed on
	for ; err == nil && std.StatusCode >= 100 && std.StatusCode < 200 && std.StatusCode != http.StatusSwitchingProtocols; n++ {
		if n == httprules.MaxInterim {
			return nil, errors.Join(connpool.ErrAnswerStarted, httprules.ErrTooManyInterim)
		}
		interim(std.StatusCode, std.Header)
		ac.Limit(connpool.MaxAnswerHeader)
		std, err = http.ReadResponse(ac.R, req)
	}
	if err != nil {
		if std != nil || n > 0 || ac.R.Buffered() > 0 {
			err = errors.Join(connpool.ErrAnswerStarted, err)
		}
		return nil, err
	}
	return std, nil
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
	// broke is Leg.BodyBroke (nil: no error is the client's body's).
	broke func(error) bool
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

// sendBody starts writing req's body to ac, whose head is in ac.W.
func (l *Leg) sendBody(ac *connpool.Conn, req *http.Request, chunked bool) *bodyWriter {
	b := &bodyWriter{done: make(chan struct{}), broke: l.BodyBroke}
	var body io.Reader = req.Body
	if l.ClientBody != nil {
		body = l.ClientBody(req.Body)
	}
	go b.write(ac, body, req.Trailer, chunked)
	return b
}

func (b *bodyWriter) write(ac *connpool.Conn, body io.Reader, trailer http.Header, chunked bool) {
	err := writeBody(ac.W, bodyReader{b, body}, trailer, chunked)
	b.err = err
	close(b.done)
	if b.clients(err) {
		// The client's body broke: the app's request can never be whole. The caller, woken
		// by the close, answers the client for it (Serve returns the body's error).
		ac.Conn.Close()
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
	buf := buffers.get()
	defer buffers.put(buf)
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

// writeWait is how long an answer that came before its request's body was all sent waits
// for the body's writer to end, before the connection is given up (http.Transport's
// maxWriteWaitBeforeConnReuse).
const writeWait = 50 * time.Millisecond

// finishedWithin reports whether the writer has sent the whole body (true for none),
// waiting up to d for it to end.
func (b *bodyWriter) finishedWithin(d time.Duration) bool {
	if b == nil {
		return true
	}
	select {
	case <-b.done:
	default:
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-b.done:
		case <-t.C:
			return false
		}
	}
	return b.err == nil
}

// noBody reports whether the answer to req with status has no body by rule.
func noBody(req *http.Request, status int) bool {
	return req.Method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified || (status >= 100 && status < 200)
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
	if b.clients(b.err) {
		return b.err
	}
	return nil
}

// clients reports whether err is the client's body breaking (Leg.BodyBroke).
func (b *bodyWriter) clients(err error) bool { return err != nil && b.broke != nil && b.broke(err) }

// writeAnswer writes the app's answer a, read from ac, to the client, as ReverseProxy
// would, then returns ac to the pool or closes it. body is the request body's writer (nil:
// none): a connection whose writer has not finished when the answer has is not reused.
func (l *Leg) writeAnswer(w http.ResponseWriter, req *http.Request, a *appAnswer, ac *connpool.Conn, app *App, stop func() bool, body *bodyWriter) {
	status := a.status()
	if l.Answered != nil {
		l.Answered(req, status)
	}
	var (
		trailers []string
		flush    bool
		keep     bool
		src      io.Reader
	)
	if a.std != nil {
		trailers = copyStdHeader(w.Header(), a.std)
		flush = a.std.ContentLength == -1 || eventStream(a.std.Header.Get("Content-Type"))
		keep = !a.std.Close && !httprules.HasToken(a.std.Header["Connection"], "close")
		src = a.std.Body
	} else {
		trailers = copyFastHeader(w.Header(), a.fast)
		flush = streamed(a.fast)
		// -2: no length, the body runs to the connection's close; but an answer that has
		// no body by rule (204, 304) says nothing of its length. (The answer to a HEAD,
		// whose length fasthttp would take the same way, is read by net/http's parser.)
		keep = !a.fast.ConnectionClose() && (a.fast.Header.ContentLength() != -2 || noBody(req, status))
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
	// A connection whose request body has not all gone out (the app answered first and may
	// never read the rest) is not reused; the writer gets as long as http.Transport gives
	// its own before it decides.
	keep = keep && err == nil && body.finishedWithin(writeWait)
	if !keep {
		ac.Conn.Close()
	}
	if a.std != nil {
		a.std.Body.Close()
	} else if a.fast.CloseBodyStream() != nil {
		keep = false
	}
	// stop reports false when the context already fired and poisoned the deadline.
	if stop() && keep {
		app.pool.Put(ac)
	} else {
		ac.Conn.Close()
	}
	if err != nil {
		if errors.Is(err, connpool.ErrAnswerStarted) { // not the client going away
			l.logf("olio: the app's answer to %s broke off: %v", req.URL.Path, err)
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
	buf := buffers.get()
	defer buffers.put(buf)
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
			return errors.Join(connpool.ErrAnswerStarted, err)
		}
	}
}

// upgradedApp is the app's side of an upgraded connection: what its reader holds first.
type upgradedApp struct{ ac *connpool.Conn }

func (u upgradedApp) Read(p []byte) (int, error)  { return u.ac.R.Read(p) }
func (u upgradedApp) Write(p []byte) (int, error) { return u.ac.Conn.Write(p) }
func (u upgradedApp) Close() error                { return u.ac.Conn.Close() }
