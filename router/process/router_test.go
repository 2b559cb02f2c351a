package process

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/olio-dev/olio/router/keys"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/mux"
	"github.com/olio-dev/olio/router/internal/appleg"
	"github.com/olio-dev/olio/router/internal/peerwire"
)

// testCluster is N routers in this process, each with an httptest app that answers with its
// index and what it received, connected through real mux sockets.
type testCluster struct {
	routers []*Router
	apps    []*httptest.Server
	peers   []*peerServer // each router's private side
}

type testAnswer struct {
	Index   int         `json:"index"`
	Headers http.Header `json:"headers"`
	Body    int         `json:"body"`
}

func newTestCluster(t testing.TB, n int, forwardTimeout time.Duration) *testCluster {
	t.Helper()
	dir := t.TempDir()
	peers := make([]string, n)
	for i := range peers {
		peers[i] = RunDir(dir).PeerSocket(i)
	}
	tc := &testCluster{}
	for i := 0; i < n; i++ {
		set, err := newSettings(&descend.Config{
			Index: i, Key: "header:X-Olio-Key", Secret: "s3cr3t", RunDir: dir,
			ForwardTimeout: forwardTimeout, RequestTimeout: 5 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		r := newRouter(i, set, slog.New(slog.DiscardHandler))
		r.members.Store(&membership{epoch: 1, workers: n})
		r.pool.SetPeers(peers)
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			b, _ := io.ReadAll(req.Body)
			json.NewEncoder(w).Encode(testAnswer{Index: i, Headers: req.Header, Body: len(b)})
		}))
		port, _ := strconv.Atoi(app.URL[strings.LastIndexByte(app.URL, ':')+1:])
		inst := &instance{port: port, transport: appleg.New(port)}
		r.apps.setCurrent(inst)
		ln, err := mux.Listen(peers[i], nil)
		if err != nil {
			t.Fatal(err)
		}
		srv := r.newPeerServer()
		go srv.Serve(ln)
		t.Cleanup(func() {
			srv.Close()
			ln.Close()
			r.pool.Close()
			r.remoteTransport.CloseIdleConnections()
			inst.transport.CloseIdleConnections()
			app.Close()
		})
		tc.routers = append(tc.routers, r)
		tc.apps = append(tc.apps, app)
		tc.peers = append(tc.peers, srv)
	}
	return tc
}

// do sends req to router i's public handler.
func (tc *testCluster) do(i int, req *http.Request) (*httptest.ResponseRecorder, *testAnswer) {
	rec := httptest.NewRecorder()
	tc.routers[i].ServeHTTP(rec, req)
	var a testAnswer
	if rec.Code == http.StatusOK {
		json.Unmarshal(rec.Body.Bytes(), &a)
	}
	return rec, &a
}

// keyOwnedBy finds a key whose owner among n workers is owner.
func keyOwnedBy(owner, n int) string {
	for i := 0; ; i++ {
		k := "k" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		if keys.Owner(k, n) == owner {
			return k
		}
	}
}

func TestRoutesKeysToOwners(t *testing.T) {
	tc := newTestCluster(t, 3, time.Second)
	for k := 0; k < 30; k++ {
		key := fmt.Sprintf("key-%d", k)
		for accept := 0; accept < 3; accept++ {
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("X-Olio-Key", key)
			rec, a := tc.do(accept, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("key %s via %d: %d %s", key, accept, rec.Code, rec.Body)
			}
			if g, e := a.Index, keys.Owner(key, 3); g != e {
				t.Errorf("key %s accepted by %d served by %d, owner %d", key, accept, g, e)
			}
			if a.Headers.Get(HeaderSecret) != "" || a.Headers.Get(HeaderIndex) != "" {
				t.Errorf("the app saw olio's headers: %v", a.Headers)
			}
		}
	}
	if g := tc.routers[0].counters.forwardedOut.Load(); g == 0 {
		t.Error("router 0 forwarded nothing")
	}
}

// The counters after requests are done: nothing in flight (a drain waits for that to reach
// zero), every request counted once where it was served and once where it was forwarded.
func TestCountersAfterRequests(t *testing.T) {
	tc := newTestCluster(t, 2, time.Second)
	const n = 10
	for k := 0; k < n; k++ {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set(HeaderIndex, strconv.Itoa(k%2))
		req.Header.Set(HeaderSecret, "s3cr3t")
		if rec, _ := tc.do(0, req); rec.Code != http.StatusOK {
			t.Fatalf("request %d: %d %s", k, rec.Code, rec.Body)
		}
	}
	for i, r := range tc.routers {
		c := r.counters
		if g := c.inFlight.Load(); g != 0 {
			t.Errorf("router %d: %d in flight after every request is done", i, g)
		}
		if g := r.apps.current.Load().inFlight.Load(); g != 0 {
			t.Errorf("router %d's app instance: %d in flight after every request is done", i, g)
		}
		if g := c.served.Load(); g != n/2 {
			t.Errorf("router %d served %d, want %d", i, g, n/2)
		}
	}
	if g, e := tc.routers[0].counters.forwardedOut.Load(), uint64(n/2); g != e {
		t.Errorf("router 0 forwarded %d, want %d", g, e)
	}
	if g, e := tc.routers[1].counters.forwardedIn.Load(), uint64(n/2); g != e {
		t.Errorf("router 1 received %d forwarded requests, want %d", g, e)
	}
}

func TestNoKeyServedLocally(t *testing.T) {
	tc := newTestCluster(t, 2, time.Second)
	for i := 0; i < 2; i++ {
		rec, a := tc.do(i, httptest.NewRequest("GET", "/", nil))
		if rec.Code != http.StatusOK || a.Index != i {
			t.Errorf("router %d: %d, served by %d", i, rec.Code, a.Index)
		}
	}
}

func TestDirectAddressing(t *testing.T) {
	tc := newTestCluster(t, 3, time.Second)
	for _, c := range []struct {
		index, secret string
		code, served  int
	}{
		{"2", "s3cr3t", 200, 2},
		{"1", "s3cr3t", 200, 1},
		{"2", "wrong", 403, 0},
		{"2", "", 403, 0},
		{"3", "s3cr3t", 400, 0},
		{"x", "s3cr3t", 400, 0},
	} {
		req := httptest.NewRequest("POST", "/", strings.NewReader("hello"))
		req.Header.Set(HeaderIndex, c.index)
		if c.secret != "" {
			req.Header.Set(HeaderSecret, c.secret)
		}
		req.Header.Set("X-Olio-Key", "whatever")
		rec, a := tc.do(0, req)
		if rec.Code != c.code {
			t.Errorf("index %q secret %q: %d, want %d", c.index, c.secret, rec.Code, c.code)
			continue
		}
		if c.code == 200 && (a.Index != c.served || a.Body != 5) {
			t.Errorf("index %q: served by %d with %d body bytes", c.index, a.Index, a.Body)
		}
		if c.code != 200 && strings.Contains(rec.Body.String(), "s3cr3t") {
			t.Errorf("the answer echoes the secret: %q", rec.Body)
		}
	}
}

func TestForwardedBodyAndXFF(t *testing.T) {
	tc := newTestCluster(t, 2, time.Second)
	body := bytes.Repeat([]byte("x"), 1<<20)
	req := httptest.NewRequest("POST", "/upload", bytes.NewReader(body))
	req.RemoteAddr = "192.0.2.7:1234"
	req.Header.Set(HeaderIndex, "1")
	req.Header.Set(HeaderSecret, "s3cr3t")
	rec, a := tc.do(0, req)
	if rec.Code != 200 || a.Index != 1 || a.Body != 1<<20 {
		t.Fatalf("got %d, index %d, %d bytes", rec.Code, a.Index, a.Body)
	}
	if g := a.Headers.Get("X-Forwarded-For"); g != "192.0.2.7" {
		t.Errorf("X-Forwarded-For = %q, want the client's address once", g)
	}
}

// The peer side serves a stream only once a request on it has carried the secret.
func TestPeerSideNeedsSecret(t *testing.T) {
	tc := newTestCluster(t, 2, time.Second)
	r := tc.routers[0]
	for _, c := range []struct {
		secret string
		want   int
	}{{"", http.StatusForbidden}, {"wrong", http.StatusForbidden}, {"s3cr3t", http.StatusOK}} {
		st, err := r.openPeer(context.Background(), 1)
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("GET", "/", nil)
		st.Write(peerwire.AppendEnd(appendRequestHead(peerwire.AppendHello(nil, c.secret), req, false, ""), nil))
		ac := &peerStream{c: st, br: bufio.NewReader(st)}
		x := &exchange{ac: ac, req: req, stop: func() bool { return false }}
		x.halves.Store(1)
		resp, err := x.readHead(nil)
		if err != nil {
			t.Fatalf("secret %q: %v", c.secret, err)
		}
		if resp.StatusCode != c.want {
			t.Errorf("secret %q: %d, want %d", c.secret, resp.StatusCode, c.want)
		}
		st.Close()
	}
}

// A request for a worker whose app is not ready waits, then gets 503 with Retry-After.
func TestHeldRequestTimesOut(t *testing.T) {
	tc := newTestCluster(t, 1, 50*time.Millisecond)
	tc.routers[0].apps.setCurrent(nil)
	rec, _ := tc.do(0, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("got %d (Retry-After %q), want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
}

// A held request whose client goes away is recorded as 499 (the client closed the
// request), as a request whose app answer it left is, not as the 200 net/http assumes
// of a handler that wrote nothing.
func TestHeldRequestClientGone(t *testing.T) {
	tc := newTestCluster(t, 1, 10*time.Second)
	r := tc.routers[0]
	r.apps.setCurrent(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		rec, _ := tc.do(0, httptest.NewRequest("GET", "/", nil).WithContext(ctx))
		done <- rec.Code
	}()
	waitUntil(t, "the request is held", func() bool { return r.apps.held.Load() > 0 })
	cancel()
	select {
	case code := <-done:
		if code != 499 {
			t.Errorf("a held request whose client left: %d, want 499", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the held request did not end within 5s of its client leaving")
	}
}

// A held request is served as soon as the app becomes ready. The app comes back only once
// the request is held (waiting for an instance): before that, the test would test nothing.
func TestHeldRequestServedWhenReady(t *testing.T) {
	tc := newTestCluster(t, 1, 10*time.Second)
	r := tc.routers[0]
	inst := r.apps.current.Load()
	r.apps.setCurrent(nil)
	done := make(chan int, 1)
	go func() {
		rec, _ := tc.do(0, httptest.NewRequest("GET", "/", nil))
		done <- rec.Code
	}()
	deadline := time.Now().Add(5 * time.Second)
	for r.apps.held.Load() == 0 {
		select {
		case code := <-done:
			t.Fatalf("answered %d while there was no app, without being held", code)
		case <-time.After(time.Millisecond): // polling interval of a condition wait
		}
		if time.Now().After(deadline) {
			t.Fatal("the request was not held within 5s")
		}
	}
	r.apps.setCurrent(inst)
	// Well within the forward timeout (10s): the request is woken, not timed out.
	select {
	case code := <-done:
		if code != http.StatusOK {
			t.Errorf("held request: %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the held request was not served within 5s of the app becoming ready")
	}
	if n := r.apps.held.Load(); n != 0 {
		t.Errorf("%d requests still counted as held after the answer", n)
	}
}

// A retry avoids the instance it failed on even while that one is still current (the
// router has not yet reaped the dead app): it waits for another, and gets nil if none comes.
func TestAppsWaitAvoidsDeadInstance(t *testing.T) {
	a := newApps(nil, slog.New(slog.DiscardHandler), new(atomic.Uint64)) // wait needs no router
	dead, next := &instance{port: 1}, &instance{port: 2}
	a.setCurrent(dead)
	if got := a.wait(context.Background(), 20*time.Millisecond, dead); got != nil {
		t.Errorf("wait avoiding the current instance returned instance %d, want none", got.port)
	}
	if got := a.wait(context.Background(), time.Second, nil); got != dead {
		t.Errorf("wait without avoid returned %v, want the current instance", got)
	}
	got := make(chan *instance, 1)
	go func() { got <- a.wait(context.Background(), 10*time.Second, dead) }()
	waitUntil(t, "the retry is held", func() bool { return a.held.Load() > 0 })
	a.setCurrent(next)
	select {
	case g := <-got:
		if g != next {
			t.Errorf("the held retry got %v, want the new instance", g)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the held retry was not woken by the new instance")
	}
}

// A request to a peer that never comes up gets 503 after the forward timeout.
func TestForwardToAbsentPeer(t *testing.T) {
	tc := newTestCluster(t, 1, 50*time.Millisecond)
	r := tc.routers[0]
	r.members.Store(&membership{epoch: 2, workers: 2})
	r.pool.SetPeers([]string{filepath.Join(t.TempDir(), "a.sock"), filepath.Join(t.TempDir(), "absent.sock")})
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set(HeaderIndex, "1")
	req.Header.Set(HeaderSecret, "s3cr3t")
	rec, _ := tc.do(0, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("got %d %q, want 503 with Retry-After", rec.Code, rec.Body)
	}
}

// waitUntil waits until cond holds, polling every millisecond, and fails the test if it
// does not within 5s.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5s until %s", what)
		}
	}
}

// listenerFile is a listening socket on a loopback port, as the master passes one to a
// router (the *os.File a test closes), and its address.
func listenerFile(t testing.TB) (*os.File, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	return f, ln.Addr().String()
}
