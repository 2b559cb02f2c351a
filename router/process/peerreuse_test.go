package process

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/olio-dev/olio/mux"
)

// A request that could not be sent again (a body, or a method that is not safe) never goes
// on a pooled stream the owner has closed while it was idle: it goes on a new one, and is
// answered by the owner. (Sent on the closed one, it would be lost unread, and a 502.)
func TestNonReplayableSkipsClosedStream(t *testing.T) {
	tc := newTestCluster(t, 2, time.Second)
	key := keyOwnedBy(1, 2)
	for _, c := range []struct {
		method, body string
	}{{"DELETE", ""}, {"POST", "payload"}, {"GET", ""}} {
		// A stream to the owner, idle in router 0's pool.
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("X-Olio-Key", key)
		if rec, a := tc.do(0, req); rec.Code != http.StatusOK || a.Index != 1 {
			t.Fatalf("a forwarded GET: %d from %d", rec.Code, a.Index)
		}
		idle := tc.routers[0].remoteTransport.pool(1).pool.Idle()
		if len(idle) == 0 {
			t.Fatal("no idle stream to the owner after a forward")
		}
		// The owner closes its idle streams (as it does when it shuts down), and router 0
		// hears of it.
		srv := tc.peers[1]
		closed := 0
		waitUntil(t, "the owner's end of every pooled stream to be idle, and closed", func() bool {
			srv.mu.Lock()
			defer srv.mu.Unlock()
			for pc, isIdle := range srv.conns {
				if isIdle {
					pc.c.Close()
					srv.conns[pc] = false
					closed++
				}
			}
			return closed >= len(idle)
		})
		waitUntil(t, "router 0 hears that the owner closed its idle streams", func() bool {
			for _, ac := range idle {
				if !ac.Conn.(*mux.Stream).PeerClosed() {
					return false
				}
			}
			return true
		})

		req = httptest.NewRequest(c.method, "/", strings.NewReader(c.body))
		if c.body == "" {
			req = httptest.NewRequest(c.method, "/", nil)
		}
		req.Header.Set("X-Olio-Key", key)
		rec, a := tc.do(0, req)
		if rec.Code != http.StatusOK || a.Index != 1 || a.Body != len(c.body) {
			t.Errorf("%s with %d bytes of body after the owner closed the idle streams: %d from %d (%d bytes): %s",
				c.method, len(c.body), rec.Code, a.Index, a.Body, rec.Body)
		}
	}
}

// BenchmarkEmbeddedForwardedSlow is BenchmarkEmbeddedForwarded with an answer that takes
// 2 ms: the owner watches the stream for the forwarder's close while it runs.
func BenchmarkEmbeddedForwardedSlow(b *testing.B) {
	tc := newTestCluster(b, 2, time.Second)
	for _, r := range tc.routers {
		r.handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			time.Sleep(2 * time.Millisecond) // the answer's time, not a wait for anything
			w.Header().Set("Content-Length", "2")
			w.Write([]byte("ok"))
		})
	}
	benchServe(b, tc, benchKey(true))
}

// A pooled stream whose session has ended (its owner was replaced and has gone) is not
// used, whatever the request: a GET goes on a new stream and is answered, not given up as
// sent to a silent owner (the session, ended, has not been heard from since).
func TestForwardSkipsStreamOfEndedSession(t *testing.T) {
	tc := newTestCluster(t, 2, 5*time.Second)
	key := keyOwnedBy(1, 2)
	get := func() (*httptest.ResponseRecorder, *testAnswer) {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("X-Olio-Key", key)
		return tc.do(0, req)
	}
	if rec, a := get(); rec.Code != http.StatusOK || a.Index != 1 {
		t.Fatalf("a forwarded GET: %d from %d", rec.Code, a.Index)
	}
	idle := tc.routers[0].remoteTransport.pool(1).pool.Idle()
	if len(idle) == 0 {
		t.Fatal("no idle stream to the owner after a forward")
	}
	s := idle[0].Conn.(*mux.Stream)
	s.Session().Close() // the session ends; its stream stays in the pool
	waitUntil(t, "the ended session's peer to count as silent", s.PeerSilent)
	if rec, a := get(); rec.Code != http.StatusOK || a.Index != 1 {
		t.Errorf("a forwarded GET after the session of the pooled stream ended: %d from %d: %s", rec.Code, a.Index, rec.Body)
	}
}
