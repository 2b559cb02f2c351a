package process

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router/internal/accesslog"
	"github.com/olio-dev/olio/router/internal/hotkeys"
)

// withAccessLog turns on router i's access log into a file of its own.
func withAccessLog(t testing.TB, r *Router, format, keyStats string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "access.log")
	cfg := r.settings().cfg
	cfg.AccessLog, cfg.AccessLogFormat, cfg.KeyStats = path, format, keyStats
	set, err := newSettings(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.set.Store(set)
	if err := r.setAccessLog(&cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.closeAccessLog)
	return path
}

// accessLines closes r's access log (writing what is queued) and returns its lines.
func accessLines(t *testing.T, r *Router, path string) []string {
	t.Helper()
	r.closeAccessLog()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// Each route gets one line on the accepting router, naming it and the worker that served
// the request; the owner writes nothing for a request forwarded to it.
func TestAccessLogRoutes(t *testing.T) {
	tc := newTestCluster(t, 2, time.Second)
	path := withAccessLog(t, tc.routers[0], "json", descend.KeyStatsOn)
	ownerPath := withAccessLog(t, tc.routers[1], "json", descend.KeyStatsOn)
	local, remote := keyOwnedBy(0, 2), keyOwnedBy(1, 2)

	type want struct {
		status int
		route  string
		worker *int
		key    *string
		app    bool
	}
	w0, w1 := 0, 1
	cases := []struct {
		name string
		req  func() *http.Request
		want want
	}{
		{"local", func() *http.Request {
			req := httptest.NewRequest("POST", "/a?b=c", strings.NewReader("hello"))
			req.Header.Set("X-Olio-Key", local)
			return req
		}, want{200, RouteLocal, &w0, &local, true}},
		{"forwarded", func() *http.Request {
			req := httptest.NewRequest("GET", "/f", nil)
			req.Header.Set("X-Olio-Key", remote)
			return req
		}, want{200, RouteForwarded, &w1, &remote, true}},
		{"no key", func() *http.Request { return httptest.NewRequest("GET", "/n", nil) },
			want{200, RouteLocal, &w0, nil, true}},
		{"direct", func() *http.Request {
			req := httptest.NewRequest("GET", "/d", nil)
			req.Header.Set(HeaderIndex, "1")
			req.Header.Set(HeaderSecret, "s3cr3t")
			return req
		}, want{200, RouteDirect, &w1, nil, true}},
		{"direct, wrong secret", func() *http.Request {
			req := httptest.NewRequest("GET", "/d", nil)
			req.Header.Set(HeaderIndex, "1")
			req.Header.Set(HeaderSecret, "wrong")
			return req
		}, want{403, RouteDirect, nil, nil, false}},
		{"fan-out", func() *http.Request { return fanoutRequest("", "s3cr3t") },
			want{200, RouteFanout, nil, nil, false}},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		tc.routers[0].ServeHTTP(rec, c.req())
		if rec.Code != c.want.status {
			t.Fatalf("%s: status %d, want %d: %s", c.name, rec.Code, c.want.status, rec.Body)
		}
		if _, ok := rec.Result().Header[accesslog.HeaderAppTime]; ok || strings.Contains(rec.Body.String(), accesslog.HeaderAppTime) || strings.Contains(rec.Body.String(), headerTiming) {
			t.Errorf("%s: the routers' timing headers reached the client or the app: %s", c.name, rec.Body)
		}
	}
	lines := accessLines(t, tc.routers[0], path)
	if g, e := len(lines), len(cases); g != e {
		t.Fatalf("%d lines, want %d:\n%s", g, e, strings.Join(lines, "\n"))
	}
	for i, c := range cases {
		var a AccessLine
		if err := json.Unmarshal([]byte(lines[i]), &a); err != nil {
			t.Fatalf("%s: line %q: %v", c.name, lines[i], err)
		}
		w := c.want
		if a.Status != w.status || a.Route != w.route || !eqPtr(a.Worker, w.worker) || !eqPtr(a.Key, w.key) || (a.App != nil) != w.app {
			t.Errorf("%s: got %s", c.name, lines[i])
		}
		if a.App != nil && *a.App > a.Duration {
			t.Errorf("%s: the app's share %f is more than the whole %f", c.name, *a.App, a.Duration)
		}
	}
	var first AccessLine
	json.Unmarshal([]byte(lines[0]), &first)
	if first.Method != "POST" || first.URI != "/a?b=c" || first.BytesIn != 5 || first.BytesOut == 0 || first.Client == "" {
		t.Errorf("local line: %s", lines[0])
	}
	if owner := accessLines(t, tc.routers[1], ownerPath); len(owner) != 1 || owner[0] != "" {
		t.Errorf("the owner wrote %q; the accepting router alone logs a request", owner)
	}
}

func eqPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// --key-stats hashed logs the key's digest, off no key; the key itself never appears.
func TestAccessLogKeyPrivacy(t *testing.T) {
	for _, mode := range []string{descend.KeyStatsHashed, descend.KeyStatsOff} {
		tc := newTestCluster(t, 1, time.Second)
		r := tc.routers[0]
		path := withAccessLog(t, r, "text", mode)
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("X-Olio-Key", "alice-secret-id")
		r.ServeHTTP(httptest.NewRecorder(), req)
		lines := accessLines(t, r, path)
		if len(lines) != 1 || strings.Contains(lines[0], "alice") {
			t.Fatalf("%s: %q", mode, lines)
		}
		want := ` - 0 local`
		if mode == descend.KeyStatsHashed {
			want = ` "` + hotkeys.KeyDigest(r.settings().secret, xxhash.Sum64String("alice-secret-id")) + `" 0 local`
		}
		if !strings.HasSuffix(lines[0], want) {
			t.Errorf("%s: %q does not end with %q", mode, lines[0], want)
		}
	}
}

// Reopen writes to a fresh file at the path after the old one was renamed away.
func TestAccessLogReopen(t *testing.T) {
	tc := newTestCluster(t, 1, time.Second)
	r := tc.routers[0]
	path := withAccessLog(t, r, "text", descend.KeyStatsOn)
	do := func(uri string) { r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", uri, nil)) }
	do("/before")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := r.alog.Load().Reopen(); err != nil {
		t.Fatal(err)
	}
	do("/after")
	lines := accessLines(t, r, path)
	old, _ := os.ReadFile(path + ".1")
	if len(lines) != 1 || !strings.Contains(lines[0], "/after") || !strings.Contains(string(old), "/before") || strings.Contains(string(old), "/after") {
		t.Errorf("new file %q, old file %q", lines, old)
	}
}

func benchAccessLog(b *testing.B, forwarded bool) {
	tc := newTestCluster(b, 2, time.Second)
	withAccessLog(b, tc.routers[0], "text", descend.KeyStatsOn)
	withAccessLog(b, tc.routers[1], "text", descend.KeyStatsOn)
	benchServe(b, tc, benchKey(forwarded))
	b.StopTimer()
	b.ReportMetric(float64(tc.routers[0].counters.accessDropped.Load()), "dropped")
}

// Compare with BenchmarkRouteLocal and BenchmarkRouteForwarded (the log off).
func BenchmarkRouteLocalAccessLog(b *testing.B)     { benchAccessLog(b, false) }
func BenchmarkRouteForwardedAccessLog(b *testing.B) { benchAccessLog(b, true) }

// The log's own cost per request, without the proxying around it: the entry, the
// writer wrapper and the queue (the writer goroutine formats and writes off the request).
func BenchmarkAccessLogEntry(b *testing.B) {
	tc := newTestCluster(b, 1, time.Second)
	r := tc.routers[0]
	withAccessLog(b, r, "text", descend.KeyStatsOn)
	req := httptest.NewRequest("GET", "/some/path?q=1", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a := r.beginAccess(w, req)
		a.setKey(1, "alice")
		accesslog.StartApp(&a.w)
		a.w.WriteHeader(200)
		a.w.Write([]byte("ok"))
		a.end()
	}
	b.StopTimer()
	b.ReportMetric(float64(r.counters.accessDropped.Load())/float64(b.N), "dropped/op")
}

// A request held for a hand-over is logged with its key whether it is served, given up
// (503 after the forward timeout) or left by its client (499).
func TestAccessLogHeldRequestHasKey(t *testing.T) {
	tc := newTestCluster(t, 1, 50*time.Millisecond)
	r := tc.routers[0]
	path := withAccessLog(t, r, "json", descend.KeyStatsOn)
	moving := keyOwnedBy(1, 2) // owned by worker 0 of 1, by worker 1 of 2
	r.handover.mu.Lock()
	r.handover.pending.Store(&membership{epoch: 2, workers: 2})
	r.handover.mu.Unlock()
	req := httptest.NewRequest("GET", "/held", nil)
	req.Header.Set("X-Olio-Key", moving)
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("held request: %d, want 503 after the forward timeout", rec.Code)
	}
	lines := accessLines(t, r, path)
	var a AccessLine
	if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &a) != nil {
		t.Fatalf("lines: %q", lines)
	}
	if a.Status != http.StatusServiceUnavailable || !eqPtr(a.Key, &moving) {
		t.Errorf("the held request's line: %s; want status 503 and key %q", lines[0], moving)
	}
}
