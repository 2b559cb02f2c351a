package process

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// forwardTraced sends req to worker 1 through router 0 and returns the answer, its body and
// the interim answers the client saw before it.
func forwardTraced(t *testing.T, req *http.Request) (resp *http.Response, body string, interims []int) {
	t.Helper()
	var mu sync.Mutex
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		defer mu.Unlock()
		if code == http.StatusEarlyHints && h.Get("Link") != "</a.css>; rel=preload" {
			t.Errorf("103 with Link %q", h.Get("Link"))
		}
		interims = append(interims, code)
		return nil
	}}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp = forward(t, req)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	return resp, string(b), interims
}

// earlyHints is a handler that sends n 103 answers, then reads the body and answers 200 with
// its length; runs counts the requests it served.
func earlyHints(n int, runs *atomic.Int32) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		runs.Add(1)
		w.Header().Set("Link", "</a.css>; rel=preload")
		for range n {
			w.WriteHeader(http.StatusEarlyHints)
		}
		w.Header().Del("Link")
		b, _ := io.ReadAll(req.Body)
		w.Header().Set("X-Final", "yes")
		io.WriteString(w, "final "+string(b))
	}
}

// Interim answers cross the peer leg to the client, as ReverseProxy passes them on, at
// most maxInterim of them; the final answer does not carry their fields.
func TestPeerInterim(t *testing.T) {
	for _, n := range []int{1, 2, maxInterim + 3} {
		var runs atomic.Int32
		_, url := newPeerCluster(t, earlyHints(n, &runs))
		resp, body, interims := forwardTraced(t, mustRequest("GET", url))
		if resp.StatusCode != http.StatusOK || body != "final " || resp.Header.Get("X-Final") != "yes" {
			t.Fatalf("%d hints: answer %d %q %v", n, resp.StatusCode, body, resp.Header)
		}
		if resp.Header.Get("Link") != "" {
			t.Errorf("%d hints: the final answer carries the hints' Link: %v", n, resp.Header)
		}
		if want := min(n, maxInterim); len(interims) != want {
			t.Errorf("%d hints: the client saw %d interim answers %v, want %d", n, len(interims), interims, want)
		}
	}
}

// Two builds side by side keep forwarding: a router speaks its own version and the one
// before it (a version 1 peer gets the bare hello and no interim answers), and refuses any
// other with an error, without running the request.
func TestPeerVersions(t *testing.T) {
	for _, c := range []struct {
		forwarder, owner int
		status, interims int // the client's answer and the interim answers it saw
	}{
		{2, 2, 200, 1},
		{2, 1, 200, 0}, // an old owner: refuses the versioned hello, then gets the bare one
		{1, 2, 200, 0}, // an old forwarder: the bare hello, no interim frames sent back
		{1, 1, 200, 0},
		{3, 2, 200, 1}, // a newer forwarder steps down to the owner's version
		{2, 3, 200, 1},
		{4, 2, 502, 0}, // two versions apart: refused both ways
		{2, 4, 502, 0},
		{1, 3, 502, 0},
	} {
		for _, method := range []string{"GET", "POST"} {
			var runs atomic.Int32
			tc, url := newPeerCluster(t, earlyHints(1, &runs))
			tc.routers[0].remoteTransport.version.Store(int32(c.forwarder))
			tc.routers[1].remoteTransport.version.Store(int32(c.owner))
			for i := range 2 { // a new stream, then a pooled one
				req := mustRequestBody(method, url, "body")
				if method == "GET" {
					req = mustRequest(method, url)
				}
				resp, body, interims := forwardTraced(t, req)
				name := fmt.Sprintf("forwarder v%d, owner v%d, %s #%d", c.forwarder, c.owner, method, i+1)
				if resp.StatusCode != c.status || len(interims) != c.interims {
					t.Errorf("%s: answer %d with %d interim answers (%q), want %d with %d", name, resp.StatusCode, len(interims), body, c.status, c.interims)
				}
				want := int32(i + 1)
				if c.status != 200 {
					want = 0
				} else if method == "POST" && body != "final body" {
					t.Errorf("%s: body %q", name, body)
				}
				if got := runs.Load(); got != want {
					t.Errorf("%s: the owner ran %d requests after %d sent, want %d", name, got, i+1, want)
				}
			}
		}
	}
}

// A request whose pooled stream breaks after the owner read it is sent again only when
// http.Transport would send it again: a safe method or an idempotency key, and no body.
func TestPeerResendOnlyReplayable(t *testing.T) {
	runs := map[string]*atomic.Int32{}
	for _, k := range []string{"warm", "GET", "HEAD", "OPTIONS", "POST", "DELETE", "PATCH", "POST-key", "DELETE-xkey", "POST-body"} {
		runs[k] = new(atomic.Int32)
	}
	_, url := newPeerCluster(t, func(w http.ResponseWriter, req *http.Request) {
		name := strings.TrimPrefix(req.URL.Path, "/")
		runs[name].Add(1)
		if name == "warm" {
			return
		}
		io.ReadAll(req.Body)
		panic(http.ErrAbortHandler) // the stream breaks off without an answer
	})
	for _, c := range []struct {
		name, method, header, body string
		runs                       int32
	}{
		{"GET", "GET", "", "", 2},
		{"HEAD", "HEAD", "", "", 2},
		{"OPTIONS", "OPTIONS", "", "", 2},
		{"POST", "POST", "", "", 1},
		{"DELETE", "DELETE", "", "", 1},
		{"PATCH", "PATCH", "", "", 1},
		{"POST-key", "POST", "Idempotency-Key", "", 2},
		{"DELETE-xkey", "DELETE", "X-Idempotency-Key", "", 2},
		{"POST-body", "POST", "Idempotency-Key", "data", 1},
	} {
		// A pooled stream first, for the request to go on.
		warm := forward(t, mustRequest("GET", url+"/warm"))
		io.Copy(io.Discard, warm.Body)
		warm.Body.Close()
		req := mustRequest(c.method, url+"/"+c.name)
		if c.body != "" {
			req = mustRequestBody(c.method, url+"/"+c.name, c.body)
		}
		if c.header != "" {
			req.Header.Set(c.header, "k1")
		}
		resp := forward(t, req)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s: answer %d, want 502", c.name, resp.StatusCode)
		}
		if got := runs[c.name].Load(); got != c.runs {
			t.Errorf("%s %s: the owner ran it %d times, want %d", c.method, c.name, got, c.runs)
		}
	}
}
