package router

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
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

// hopHeaders are the hop-by-hop headers a proxy does not pass on (RFC 9110 7.6.1), as
// ReverseProxy's list.
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// dropped reports whether a header is not passed on: hop-by-hop, or named by Connection.
func dropped(name string, connection []string) bool {
	if hopHeaders[name] {
		return true
	}
	for _, v := range connection {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && textproto.CanonicalMIMEHeaderKey(tok) == name {
				return true
			}
		}
	}
	return false
}

// fastRequest writes into out the request ReverseProxy would send for req (newLocalProxy's
// Rewrite): hop-by-hop headers and Expect dropped, the client's X-Forwarded-* and Forwarded
// replaced by this router's (kept as they came from a peer router), the Host kept.
func fastRequest(out *fasthttp.Request, req *http.Request, port int) {
	out.Header.DisableSpecialHeader() // every header goes out as it came, cookies included
	out.Header.DisableNormalizing()   // net/http already canonicalized the names
	out.Header.SetMethod(req.Method)
	out.Header.SetRequestURI(req.URL.RequestURI())
	host := req.Host
	if host == "" {
		host = "127.0.0.1:" + strconv.Itoa(port)
	}
	out.Header.Set("Host", host)
	peer := req.Context().Value(fromPeer) != nil
	conn := req.Header["Connection"]
	for k, vs := range req.Header {
		switch k {
		case "Host", "Expect", "Forwarded":
			continue
		case "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
			if !peer {
				continue
			}
		}
		if dropped(k, conn) {
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
	if !peer {
		if ip, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
			out.Header.Set("X-Forwarded-For", ip)
		}
		out.Header.Set("X-Forwarded-Host", req.Host)
		proto := "http"
		if req.TLS != nil {
			proto = "https"
		}
		out.Header.Set("X-Forwarded-Proto", proto)
	}
}

// serveFast serves req through inst's app on the fast path.
func (r *Router) serveFast(w http.ResponseWriter, req *http.Request, inst *instance) {
	out := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(out)
	fastRequest(out, req, inst.port)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	var (
		conn *appConn
		stop func() bool
	)
	err := inst.transport.exchange(req, func(ac *appConn) error {
		// The request's context (client gone, answer timeout) interrupts the connection.
		stop = context.AfterFunc(req.Context(), func() { ac.c.SetDeadline(time.Unix(1, 0)) })
		if err := fastExchange(ac, out, resp, req.Method == http.MethodHead); err != nil {
			stop()
			return err
		}
		conn = ac
		return nil
	})
	if err != nil {
		r.localError(w, req, err, inst)
		return
	}
	answered(&http.Response{StatusCode: resp.StatusCode(), Request: req})
	trailers := copyFastHeader(w.Header(), resp)
	w.WriteHeader(resp.StatusCode())
	if len(trailers) > 0 {
		// Chunked, so the trailers can follow (net/http would add a Content-Length).
		http.NewResponseController(w).Flush()
	}
	err = copyFastBody(w, resp)
	keep := err == nil && !resp.ConnectionClose() && resp.Header.ContentLength() != -2
	if !keep {
		conn.c.Close()
	}
	if resp.CloseBodyStream() != nil {
		keep = false
	}
	// stop reports false when the context already fired and poisoned the deadline.
	if stop() && keep {
		inst.transport.put(conn)
	} else {
		conn.c.Close()
	}
	if err != nil {
		// As ReverseProxy: the client must see a broken answer, not a short one.
		panic(http.ErrAbortHandler)
	}
	h := w.Header()
	for _, k := range trailers {
		for _, v := range resp.Header.PeekAll(k) {
			h.Add(k, string(v))
		}
	}
}

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
	resp.StreamBody = true
	resp.SkipBody = head
	resp.Header.SetNoDefaultContentType(true)
	if err := resp.Read(ac.br); err != nil {
		return errors.Join(errAnswerStarted, err)
	}
	return nil
}

// copyFastHeader copies the answer's end-to-end headers into h and returns the names of
// the trailers it announces.
func copyFastHeader(h http.Header, resp *fasthttp.Response) (trailers []string) {
	conn := resp.Header.PeekAll("Connection")
	var connection []string
	for _, v := range conn {
		connection = append(connection, string(v))
	}
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
		if dropped(name, connection) {
			continue
		}
		h.Add(name, string(v))
	}
	if len(trailers) > 0 {
		h["Trailer"] = []string{strings.Join(trailers, ", ")}
	}
	return trailers
}

// copyFastBody streams the answer's body to w, flushing each read when its length is
// unknown or it is an event stream (ReverseProxy's FlushInterval 0).
func copyFastBody(w http.ResponseWriter, resp *fasthttp.Response) error {
	if !resp.IsBodyStream() {
		_, err := w.Write(resp.Body())
		return err
	}
	flush := resp.Header.ContentLength() < 0 || strings.HasPrefix(string(resp.Header.ContentType()), "text/event-stream")
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
				if ferr := rc.Flush(); ferr != nil {
					return ferr
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
