package test

// The differential test: every route olio has must give the app the same request, and the
// client the same answer, as httputil.ReverseProxy alone in front of the same app.
//
// To add a case: append a diffCase to diffCases with a new Name (it becomes the path
// /diff/<Name>), the client's raw request (write {path} for the path) and the app's script
// (appScript: raw answer bytes, late bytes, a close). If ReverseProxy's own behaviour is
// arguably wrong for it, or the difference is one no client can rely on, give Deviation
// (why) and Allow (what may differ); keep those few. Run it alone with
//
//	go test ./test/ -run 'TestDifferential/.*/NAME$' -count=1
//
// The raw app (rawapp_test.go) answers every request by its path from this same table, so
// a case lives in one place. Every case goes once through the reference (an in-test
// ReverseProxy with a transport of Go's defaults, http.DefaultTransport cloned) and once
// through each route, on a fresh connection whose accepting router the test reads from
// /proc; olio's counters confirm each route was taken:
//
//	local               the key is owned by the router that accepted the connection
//	handoff             the key is owned by the other router: a bodiless HTTP/1.1 request
//	                    hands the connection over (the others are forwarded)
//	forwarded           --handoff=false, the key owned by the other router: the peer leg
//	embedded-local      --embedded, the worker's handler a ReverseProxy to the raw app
//	embedded-forwarded  the same over the peer leg. With ReverseProxy as the handler these
//	                    two are only a sanity check of the router around a handler.
//
// After each case, three more clients, each on a new connection over the same route to the
// same owner, must get their own answers: no answer meant for one client (or stray bytes
// of the app's) may reach another. Every client request gets "Connection: close",
// "X-Olio-Key" and "X-Diff-Id" added after its request line, so that each connection's
// end is observable and each request identifiable; every exchange is bounded by
// diffTimeout, so a stall is a failure.
//
// What is compared: the request the app read (request line, header fields as a sorted set,
// body, trailer) and the answer the client read (1xx answers, status, header fields as a
// sorted set, body, trailer, and how the connection ended). Left out, as proxies
// legitimately differ on them:
//   - X-Forwarded-* in the app's request: each proxy's own account of the client (olio's
//     follows its trust rule for fronts).
//   - Accept-Encoding: gzip in the app's request when the client sent no Accept-Encoding:
//     http.Transport asks for gzip on its own and decompresses for the client.
//   - The values of X-Diff-Id and X-Olio-Key, which differ per request by construction.
//   - How many times the app received an idempotent request: http.Transport resends one
//     whose reused connection closed before any answer, so the count depends on its pool.
//     A request that is not idempotent must arrive exactly as many times.
//   - Date and the hop-by-hop fields of the answer (Connection, Keep-Alive,
//     Proxy-Connection, Transfer-Encoding, Trailer, TE, Upgrade): each hop's own.
//   - The header and body of an answer the proxy made itself (502, 503, 504): ReverseProxy's
//     is empty, olio's says why in a line; the status must match.

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/olio-dev/olio/listener"
)

// diffCase is one client request and the app's behaviour for it.
type diffCase struct {
	Name    string // URL-safe; the request's path is /diff/<Name>
	Request string // the client's raw request; {path} stands for its path
	App     appScript
	// Deviation says why olio may differ from ReverseProxy on this case; Allow erases
	// from both views what may differ.
	Deviation string
	Allow     func(v *diffView)
}

// appScript is what the raw app does with a case's request.
type appScript struct {
	ReadBody bool   // read the request's body before answering (else: answer, then read it)
	Answer   string // written as it is, at once ("" writes nothing)
	Later    string // written lateDelay after the answer (the rest of it, or stray bytes on the idle connection)
	Close    bool   // close the connection after the answer (and Later)
}

// The usual parts of requests and answers.
const (
	diffGet  = "GET {path} HTTP/1.1\r\nHost: diff\r\n\r\n"
	diffHead = "HEAD {path} HTTP/1.1\r\nHost: diff\r\n\r\n"
	// diffInjected is a whole answer an app sends where none was asked for: whoever gets
	// it got an answer that was not theirs.
	diffInjected = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Injected: 1\r\n\r\nPWNED-0-xxx"
)

// diffPost is a POST with body.
func diffPost(body string) string {
	return fmt.Sprintf("POST {path} HTTP/1.1\r\nHost: diff\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// diffOK is a 200 answer with body and its length.
func diffOK(body string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// diffChunked is a chunked 200 answer of the chunks, then trailer (raw lines).
func diffChunked(header string, chunks []string, trailer string) string {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n" + header + "\r\n")
	for _, c := range chunks {
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(c), c)
	}
	b.WriteString("0\r\n" + trailer + "\r\n")
	return b.String()
}

// diffFields is n header fields of about size bytes each.
func diffFields(n, size int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "X-Pad-%05d: %s\r\n", i, strings.Repeat("p", size))
	}
	return b.String()
}

var (
	diffMiB    = strings.Repeat("0123456789abcdef", 1<<16)
	diffChunks = slices.Collect(func(yield func(string) bool) {
		for i := 0; i < len(diffMiB); i += 64 << 10 {
			if !yield(diffMiB[i : i+64<<10]) {
				return
			}
		}
	})
)

// diffCases is the corpus: ordinary, then hostile. An answer that streams carries its
// Content-Type: without one, Go's server sniffs one from the first bytes, or not, by
// whether the head was flushed before them, which is timing, not behaviour.
var diffCases = []diffCase{
	{Name: "get", Request: diffGet, App: appScript{Answer: diffOK("hello")}},
	{Name: "get-http10", Request: "GET {path} HTTP/1.0\r\nHost: diff\r\n\r\n", App: appScript{Answer: diffOK("hello")}},
	{Name: "head", Request: diffHead, App: appScript{Answer: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"}},
	{Name: "post", Request: diffPost("name=value"), App: appScript{ReadBody: true, Answer: "HTTP/1.1 201 Created\r\nLocation: /things/1\r\nContent-Length: 0\r\n\r\n"}},
	{Name: "post-chunked", Request: "POST {path} HTTP/1.1\r\nHost: diff\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
		App: appScript{ReadBody: true, Answer: diffOK("got it")}},
	{Name: "post-answered-first", Request: diffPost("answered before it was read"), App: appScript{Answer: diffOK("early")}},
	{Name: "post-chunked-trailer", Request: "POST {path} HTTP/1.1\r\nHost: diff\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n",
		App: appScript{ReadBody: true, Answer: diffOK("got it")},
		Deviation: "ReverseProxy sends the request's trailer empty (its outgoing request holds a copy of the trailer made " +
			"before the body was read); olio passes on what the client sent",
		Allow: func(v *diffView) { v.Received = strings.Replace(v.Received, "\n  trailer X-Sum: 5", "", 1) }},
	{Name: "post-large", Request: diffPost(diffMiB), App: appScript{ReadBody: true, Answer: diffOK("got it")}},
	{Name: "post-interim", Request: diffPost("hints"), App: appScript{ReadBody: true, Answer: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + diffOK("final")}},
	{Name: "post-expect-continue", Request: "POST {path} HTTP/1.1\r\nHost: diff\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
		App:       appScript{ReadBody: true, Answer: diffOK("got it")},
		Deviation: "olio answers the 100-continue itself when the body is first read and does not pass Expect on (the app would answer it again)",
		Allow:     func(v *diffView) { v.Received = strings.Replace(v.Received, "\n  Expect: 100-continue", "", 1) }},
	// The app refuses a body before reading it: the client gets the answer, the connection
	// is not used again. How much of the body the app reads after answering depends on
	// when each proxy stops sending it.
	{Name: "post-413-early", Request: diffPost(diffMiB), App: appScript{Answer: "HTTP/1.1 413 Request Entity Too Large\r\nConnection: close\r\nContent-Length: 9\r\n\r\ntoo large", Close: true},
		Deviation: "the body the app reads after its answer is cut wherever the proxy stops sending it; " +
			"olio's front closes a connection whose unread body it gives up on without the lingering close of net/http's " +
			"(its public connection has no CloseWrite), so the client may see a reset after the whole answer",
		Allow: func(v *diffView) {
			if head, _, ok := strings.Cut(v.Received, "\n  body "); ok {
				v.Received = head
			}
			if v.End == "connection reset" {
				v.End = "closed"
			}
		}},
	{Name: "put-empty", Request: "PUT {path} HTTP/1.1\r\nHost: diff\r\nContent-Length: 0\r\n\r\n", App: appScript{ReadBody: true, Answer: diffOK("put")}},
	{Name: "options", Request: "OPTIONS {path} HTTP/1.1\r\nHost: diff\r\n\r\n", App: appScript{Answer: "HTTP/1.1 204 No Content\r\nAllow: GET, POST\r\n\r\n"}},
	{Name: "upgrade", Request: "GET {path} HTTP/1.1\r\nHost: diff\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		App: appScript{Answer: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nfirst", Later: "second", Close: true}},
	{Name: "upgrade-refused", Request: "GET {path} HTTP/1.1\r\nHost: diff\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		App: appScript{Answer: diffOK("no upgrade here")}},
	{Name: "upgrade-other-protocol", Request: "GET {path} HTTP/1.1\r\nHost: diff\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		App: appScript{Answer: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", Close: true}},
	{Name: "connect", Request: "CONNECT diff.example:443 HTTP/1.1\r\nHost: diff.example:443\r\n\r\n", App: appScript{Answer: diffOK("connected")}},
	{Name: "delete-stray-two-bytes", Request: "DELETE {path} HTTP/1.1\r\nHost: diff\r\n\r\n", App: appScript{Answer: diffOK("deleted") + "xx"}},
	{Name: "chunked-answer", Request: diffGet, App: appScript{Answer: diffChunked("", []string{"hello", ", world"}, "")}},
	{Name: "large-answer", Request: diffGet, App: appScript{Answer: diffOK(diffMiB)}},
	{Name: "large-chunked-answer", Request: diffGet, App: appScript{Answer: diffChunked("", diffChunks, "")}},
	{Name: "answer-until-close", Request: diffGet, App: appScript{Answer: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthe body ends where the app closes", Close: true}},
	{Name: "answer-connection-close", Request: diffGet, App: appScript{Answer: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", Close: true}},
	{Name: "body-in-two-parts", Request: diffGet, App: appScript{Answer: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nhello", Later: "world"}},
	{Name: "chunked-end-later", Request: diffGet, App: appScript{Answer: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", Later: "0\r\n\r\n"}},
	{Name: "large-answer-header", Request: diffGet, App: appScript{Answer: "HTTP/1.1 200 OK\r\n" + diffFields(64, 1000) + "Content-Length: 2\r\n\r\nok"}},

	// Hostile apps.
	{Name: "bare-lf", Request: diffGet, App: appScript{Answer: "HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 2\n\nok"}},
	{Name: "duplicate-content-length-same", Request: diffGet, App: appScript{Answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"}},
	{Name: "duplicate-content-length-different", Request: diffGet, App: appScript{Answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"}},
	{Name: "content-length-and-chunked", Request: diffGet, App: appScript{Answer: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"}},
	{Name: "stray-after-answer", Request: diffGet, App: appScript{Answer: diffOK("mine") + diffInjected}},
	{Name: "stray-two-bytes", Request: diffGet, App: appScript{Answer: diffOK("mine") + "xx"}},
	{Name: "stray-late", Request: diffGet, App: appScript{Answer: diffOK("mine"), Later: diffInjected}},
	{Name: "stray-after-delete", Request: "DELETE {path} HTTP/1.1\r\nHost: diff\r\n\r\n", App: appScript{Answer: diffOK("deleted") + diffInjected}},
	{Name: "interim-100", Request: diffGet, App: appScript{Answer: "HTTP/1.1 100 Continue\r\n\r\n" + diffOK("final")}},
	{Name: "interim-103", Request: diffGet, App: appScript{Answer: "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" + diffOK("final")}},
	{Name: "head-with-body", Request: diffHead, App: appScript{Answer: fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(diffInjected), diffInjected)}},
	{Name: "204-with-body", Request: diffGet, App: appScript{Answer: "HTTP/1.1 204 No Content\r\n\r\n" + diffInjected}},
	{Name: "304-with-body", Request: "GET {path} HTTP/1.1\r\nHost: diff\r\nIf-None-Match: \"v1\"\r\n\r\n", App: appScript{Answer: "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n" + diffInjected}},
	{Name: "trailers", Request: diffGet, App: appScript{Answer: diffChunked("Trailer: X-Checksum\r\n", []string{"hello"}, "X-Checksum: 5d41402a\r\n")}},
	{Name: "trailers-undeclared", Request: diffGet, App: appScript{Answer: diffChunked("", []string{"hello"}, "X-Surprise: 1\r\n")}},
	// Past http.Transport's 10 MiB bound on an answer's header.
	{Name: "huge-answer-header", Request: diffGet, App: appScript{Answer: "HTTP/1.1 200 OK\r\n" + diffFields(11<<10, 1000) + "Content-Length: 2\r\n\r\nok"}},
	{Name: "cut-mid-body", Request: diffGet, App: appScript{Answer: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", Close: true},
		Deviation: "ReverseProxy has not flushed the head when the app's answer breaks off, so its client gets nothing; " +
			"a leg that streams (the peer leg) may have sent the head and the first bytes by then, or, when the owner broke the stream " +
			"off before its head crossed, answers 502 itself. Either way the client sees a broken answer, never a complete one",
		Allow: func(v *diffView) {
			if v.End == "no answer: unexpected EOF" || v.End == "answer cut short: unexpected EOF" || v.Status == http.StatusBadGateway {
				v.Status, v.Header, v.Body, v.End = 0, nil, "", "broken: no answer, or one cut short"
			}
		}},
	{Name: "close-without-answer", Request: diffGet, App: appScript{Close: true}},
	{Name: "close-without-answer-post", Request: diffPost("once"), App: appScript{ReadBody: true, Close: true}},
}

// diffTimeout bounds each exchange: a stall is a failure, not a hang.
const diffTimeout = 5 * time.Second

// acceptTimeout bounds the wait for a router to accept a connection.
const acceptTimeout = 30 * time.Second

// diffView is what one case looked like through one route.
type diffView struct {
	Received string   // the request as the app read it; "(not received)" if it did not
	Interim  []string // 1xx answers: status and header fields
	Status   int
	Header   []string // "Name: value", sorted, Date and hop-by-hop left out
	Body     string
	Trailer  []string
	End      string // how the exchange ended: "closed", "answer cut short: …", "no answer: …"
}

// diffRoute is one way through olio (or the reference) to the raw app.
type diffRoute struct {
	name     string
	c        *Cluster // nil: the reference proxy at addr
	addr     string
	other    bool        // the key's owner is not the router that accepted the connection
	routers  map[int]int // router pid by index (olio routes)
	records  string      // the record file prefix of the apps behind the route
	appIndex bool        // the apps behind the route are olio's, one per worker
	handsOff bool        // the route hands connections over
	n        int         // requests sent, for ids
}

// TestDifferential: see the top of the file.
func TestDifferential(t *testing.T) {
	t.Parallel()
	if _, _, err := tcpLookup(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, &net.TCPAddr{IP: net.IPv4zero}); err != nil {
		t.Skipf("the routes are told apart by the accepting router, which the kernel's sock_diag tells: %v", err)
	}
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	refApp := startRawApp(t, filepath.Join(dir, "ref"))
	proxy := referenceProxy(refApp)
	srv := httptest.NewUnstartedServer(proxy)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		proxy.Transport.(*http.Transport).CloseIdleConnections()
	})

	ref := &diffRoute{name: "reference", addr: srv.Listener.Addr().String(), records: filepath.Join(dir, "ref")}
	want := map[string]diffView{}
	for _, c := range diffCases {
		v, after := ref.run(t, c)
		if len(after) > 0 {
			t.Errorf("case %s through ReverseProxy alone: %s; the case is broken", c.Name, strings.Join(after, "; "))
		}
		want[c.Name] = v
	}

	h, f := filepath.Join(dir, "h"), filepath.Join(dir, "f")
	for _, cl := range []struct {
		args   []string
		routes []*diffRoute
	}{
		{[]string{"--", exe, rawAppArg, h}, []*diffRoute{
			{name: "local", records: h, appIndex: true},
			{name: "handoff", other: true, records: h, appIndex: true, handsOff: true}}},
		{[]string{"--handoff=false", "--", exe, rawAppArg, f}, []*diffRoute{
			{name: "forwarded", other: true, records: f, appIndex: true}}},
		{[]string{"--embedded", "--handoff=false", "--", exe, rawEmbeddedArg, refApp}, []*diffRoute{
			{name: "embedded-local", records: ref.records},
			{name: "embedded-forwarded", other: true, records: ref.records}}},
	} {
		c := Start(t, append([]string{"--workers", "2"}, cl.args...)...)
		routers := map[int]int{}
		for _, w := range opStatus(t, c).Workers {
			routers[w.Index] = w.RouterPID
		}
		for _, rt := range cl.routes {
			rt.c, rt.addr, rt.routers = c, c.Addr, routers
			before, sentBefore := opStatus(t, c), rt.n
			for _, dc := range diffCases {
				t.Run(rt.name+"/"+dc.Name, func(t *testing.T) {
					got, after := rt.run(t, dc)
					exp := want[dc.Name]
					if dc.Allow != nil {
						dc.Allow(&got)
						dc.Allow(&exp)
					}
					if diffs := compareViews(got, exp); len(diffs) > 0 || len(after) > 0 {
						var b strings.Builder
						fmt.Fprintf(&b, "case %s via %s differs from ReverseProxy alone", dc.Name, rt.name)
						if dc.Deviation != "" {
							fmt.Fprintf(&b, " (beyond its allowed deviation: %s)", dc.Deviation)
						}
						b.WriteString(":")
						for _, d := range append(diffs, after...) {
							b.WriteString("\n  " + d)
						}
						t.Error(b.String())
					}
				})
			}
			rt.checkTaken(t, before, opStatus(t, c), uint64(rt.n-sentBefore))
		}
		if err := c.Stop(40 * time.Second); err != nil {
			t.Errorf("olio %s did not stop cleanly: %v", strings.Join(cl.args, " "), err)
		}
	}
}

// checkTaken checks from olio's counters that the route's requests went the way its name
// says: none forwarded or handed off on a local route, every one forwarded or handed off
// on the others (a request with a body, or HTTP/1.0, is forwarded rather than handed off).
func (rt *diffRoute) checkTaken(t *testing.T, before, after *listener.Status, sent uint64) {
	t.Helper()
	var fwd, handed uint64
	for i, w := range after.Workers {
		fwd += w.Forwarded - before.Workers[i].Forwarded
		handed += w.HandedOff - before.Workers[i].HandedOff
	}
	switch {
	case sent == 0:
	case !rt.other && fwd+handed > 0:
		t.Errorf("route %s forwarded %d requests and handed off %d connections: the test did not take the route it names", rt.name, fwd, handed)
	case rt.other && fwd+handed < sent:
		t.Errorf("route %s forwarded %d requests and handed off %d connections of %d: the test did not take the route it names", rt.name, fwd, handed, sent)
	case rt.other && rt.handsOff != (handed > sent/2):
		t.Errorf("route %s handed off %d connections of %d: the test did not take the route it names", rt.name, handed, sent)
	}
}

// run sends case dc through the route and then three follow-up requests, each on a new
// connection to the same owner; it returns the case's view and what went wrong with the
// follow-ups.
func (rt *diffRoute) run(t *testing.T, dc diffCase) (diffView, []string) {
	t.Helper()
	conn, accepter := rt.dial(t, -1)
	owner := accepter
	if rt.other {
		owner = 1 - accepter
	}
	key := keyOwnedBy(owner, 2)
	id := rt.nextID(dc.Name)
	raw := strings.ReplaceAll(dc.Request, "{path}", "/diff/"+dc.Name)
	v := exchange(conn, addFields(raw, key, id), strings.Fields(raw)[0])
	v.Received = rt.received(t, raw, key, id, owner)

	var after []string
	if dc.App.Later != "" {
		if !Eventually(diffTimeout, func() bool {
			return slices.ContainsFunc(rawRecords(rt.records)[id], func(r rawRecord) bool { return r.Late })
		}) {
			after = append(after, fmt.Sprintf("the app's late bytes were not written within %s", diffTimeout))
		}
		// A proxy that closes a connection on unsolicited bytes gets a moment to do so
		// (http.Transport's reader notices them at once, but in its own goroutine); one
		// that does not may keep the connection: that is not a failure in itself.
		Eventually(time.Second, func() bool {
			return slices.ContainsFunc(rawRecords(rt.records)[id], func(r rawRecord) bool { return r.Gone })
		})
	}
	// The second follow-up's answer closes its app connection, so that a connection
	// the case spoiled is gone before the next case; the third leaves a fresh one idle,
	// so that the next case's request may reuse it.
	for i, path := range []string{"/diff-after", "/diff-after?close", "/diff-after"} {
		conn, _ := rt.dial(t, accepter)
		fid := rt.nextID(dc.Name + "-after")
		got := exchange(conn, addFields("GET "+path+" HTTP/1.1\r\nHost: diff\r\n\r\n", key, fid), "GET")
		if wantBody := "after " + fid; got.Status != 200 || got.Body != wantBody || got.End != "closed" {
			after = append(after, fmt.Sprintf("a later client (%d of 3, new connection) wanted its own answer %q and got status %d %s, body %s, end %s",
				i+1, wantBody, got.Status, strings.Join(got.Header, "; "), showBody(got.Body), got.End))
		}
	}
	return v, after
}

func (rt *diffRoute) nextID(name string) string {
	rt.n++
	return fmt.Sprintf("%s-%s-%d", rt.name, name, rt.n)
}

// addFields adds Connection: close, the key and the request id after the request line.
func addFields(raw, key, id string) string {
	line, rest, _ := strings.Cut(raw, "\r\n")
	return line + "\r\nConnection: close\r\nX-Olio-Key: " + key + "\r\nX-Diff-Id: " + id + "\r\n" + rest
}

// dial opens a fresh connection to the route, accepted by router want (any for -1), and
// returns it with the router that accepted it (0 for the reference). It is closed at the
// end of the test.
func (rt *diffRoute) dial(t *testing.T, want int) (net.Conn, int) {
	t.Helper()
	for range 200 {
		conn, err := net.DialTimeout("tcp", rt.addr, diffTimeout)
		if err != nil {
			t.Fatalf("%s: connect: %v", rt.name, err)
		}
		t.Cleanup(func() { conn.Close() })
		if rt.c == nil {
			return conn, 0
		}
		got := -1
		// (a router accepts within diffTimeout unless the machine is loaded: not a stall)
		if !Eventually(acceptTimeout, func() bool {
			got = acceptedBy(conn, rt.routers)
			return got >= 0
		}) {
			t.Fatalf("%s: no router of %v took connection %s within %s", rt.name, rt.routers, conn.LocalAddr(), acceptTimeout)
		}
		if want < 0 || got == want {
			return conn, got
		}
		conn.Close()
	}
	t.Fatalf("%s: router %d accepted none of 200 connections", rt.name, want)
	return nil, 0
}

// acceptedBy returns the index of the router that holds the server side of conn, -1 if
// none does yet (the connection waits in the accept queue).
func acceptedBy(conn net.Conn, routers map[int]int) int {
	s, found, err := tcpLookup(conn.RemoteAddr().(*net.TCPAddr), conn.LocalAddr().(*net.TCPAddr))
	if !found || err != nil || s.inode == 0 { // 0 until accepted
		return -1
	}
	inode := strconv.FormatUint(s.inode, 10)
	var pids []int
	for _, pid := range routers {
		pids = append(pids, pid)
	}
	for pid := range holders(pids, "socket:["+inode+"]") {
		for i, p := range routers {
			if p == pid {
				return i
			}
		}
	}
	return -1
}

// exchange writes raw on conn and reads the answer, within diffTimeout; it closes conn.
func exchange(conn net.Conn, raw, method string) diffView {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(diffTimeout))
	wrote := make(chan struct{})
	go func() { // the answer may come before the whole request is read
		defer close(wrote)
		io.WriteString(conn, raw)
	}()
	defer func() {
		conn.Close()
		<-wrote
	}()
	var v diffView
	br := bufio.NewReader(conn)
	req := &http.Request{Method: method}
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			v.End = "no answer: " + errClass(err)
			return v
		}
		if resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols && len(v.Interim) < 10 {
			v.Interim = append(v.Interim, strconv.Itoa(resp.StatusCode)+" "+strings.Join(headerLines(resp.Header, false), "; "))
			continue
		}
		v.Status, v.Header = resp.StatusCode, headerLines(resp.Header, true)
		body, err := io.ReadAll(resp.Body)
		v.Body = string(body)
		if err != nil {
			v.End = "answer cut short: " + errClass(err)
			return v
		}
		v.Trailer = headerLines(resp.Trailer, false)
		break
	}
	rest, err := io.ReadAll(br)
	switch {
	case len(rest) > 0:
		v.End = fmt.Sprintf("more bytes after the answer: %.80q, then ", rest)
	}
	if err != nil {
		v.End += errClass(err)
	} else {
		v.End += "closed"
	}
	return v
}

// hopFields are the answer's fields each hop sets for itself.
var hopFields = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Trailer", "Te", "Upgrade", "Date"}

// headerLines is h as sorted "Name: value" lines; answer leaves out Date and hop-by-hop.
func headerLines(h http.Header, answer bool) []string {
	var out []string
	for name, vs := range h {
		if answer && slices.Contains(hopFields, name) {
			continue
		}
		for _, v := range vs {
			out = append(out, name+": "+v)
		}
	}
	slices.Sort(out)
	return out
}

// errClass names an error by what the client saw, without addresses.
func errClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	case errors.Is(err, io.EOF):
		return "EOF"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("no end within %s", diffTimeout)
	}
	return err.Error()
}

// received renders what the app read for request id (sent as raw with key), waiting up
// to diffTimeout for it to be recorded.
func (rt *diffRoute) received(t *testing.T, raw, key, id string, owner int) string {
	var recs []rawRecord
	Eventually(diffTimeout, func() bool {
		recs = slices.DeleteFunc(rawRecords(rt.records)[id], func(r rawRecord) bool { return r.Late || r.Gone })
		return len(recs) > 0
	})
	if len(recs) == 0 {
		return "(not received)"
	}
	r := recs[0]
	clientHead, _, _ := strings.Cut(raw, "\r\n\r\n")
	noEncoding := !strings.Contains(strings.ToLower(clientHead), "\naccept-encoding:")
	var fields []string
	for _, f := range r.Fields {
		switch {
		case strings.HasPrefix(f, "X-Forwarded-"), noEncoding && f == "Accept-Encoding: gzip":
			continue
		case f == "X-Diff-Id: "+id:
			f = "X-Diff-Id: {id}"
		case f == "X-Olio-Key: "+key:
			f = "X-Olio-Key: {key}"
		}
		fields = append(fields, f)
	}
	s := r.Line + "\n  " + strings.Join(fields, "\n  ") + "\n  body " + showBody(r.Body)
	if len(r.Trailer) > 0 {
		s += "\n  trailer " + strings.Join(r.Trailer, "; ")
	}
	if r.Err != "" {
		s += "\n  read error " + r.Err
	}
	if rt.appIndex && r.App != strconv.Itoa(owner) {
		t.Errorf("request %s was served by app %s, not by its key's owner %d", id, r.App, owner)
	}
	switch method, _, _ := strings.Cut(r.Line, " "); method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
	default:
		s += fmt.Sprintf("\n  received %d times", len(recs))
	}
	return s
}

// without returns the lines of a that b lacks, at most 10 and a count of the rest.
func without(a, b []string) []string {
	in := map[string]bool{}
	for _, l := range b {
		in[l] = true
	}
	var out []string
	for _, l := range a {
		if !in[l] {
			out = append(out, l)
		}
	}
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("… and %d more", len(out)-10))
	}
	if len(out) == 0 {
		out = []string{"(none)"}
	}
	return out
}

// showBody shows a body, or its length and hash when long.
func showBody(b string) string {
	if len(b) <= 200 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%d bytes, sha256 %.16x", len(b), sha256.Sum256([]byte(b)))
}

// compareViews returns the differences between got (olio) and want (the reference).
func compareViews(got, want diffView) []string {
	if want.Status >= 502 && want.Status <= 504 { // the proxy's own answer
		got.Header, got.Body, want.Header, want.Body = nil, "", nil, ""
	}
	var out []string
	diff := func(what, g, w string) {
		if g != w {
			out = append(out, fmt.Sprintf("%s:\n    olio:         %s\n    ReverseProxy: %s", what,
				strings.ReplaceAll(g, "\n", "\n    "), strings.ReplaceAll(w, "\n", "\n    ")))
		}
	}
	diff("the request the app read", got.Received, want.Received)
	diff("1xx answers", strings.Join(got.Interim, " | "), strings.Join(want.Interim, " | "))
	diff("status", strconv.Itoa(got.Status), strconv.Itoa(want.Status))
	if !slices.Equal(got.Header, want.Header) {
		onlyGot, onlyWant := without(got.Header, want.Header), without(want.Header, got.Header)
		diff("answer header fields (only those on one side; of "+strconv.Itoa(len(got.Header))+" and "+strconv.Itoa(len(want.Header))+")",
			strings.Join(onlyGot, "\n"), strings.Join(onlyWant, "\n"))
	}
	diff("answer body", showBody(got.Body), showBody(want.Body))
	diff("answer trailer", strings.Join(got.Trailer, "; "), strings.Join(want.Trailer, "; "))
	diff("end of the connection", got.End, want.End)
	return out
}
