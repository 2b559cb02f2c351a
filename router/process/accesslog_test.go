package process

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"

	"github.com/olio-dev/olio/descend"
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
		if _, ok := rec.Result().Header[headerAppTime]; ok || strings.Contains(rec.Body.String(), headerAppTime) || strings.Contains(rec.Body.String(), headerTiming) {
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

// The text form: fixed columns, the request line and key quoted so that no client can
// forge a line or a column.
func TestAccessLogText(t *testing.T) {
	e := accessEntry{
		start: time.Date(2026, 12, 1, 14, 10, 0, 123e6, time.UTC), client: "127.0.0.1:5555",
		method: "GET", uri: "/p?q=\"x\"\n", proto: "HTTP/1.1", status: 200, in: 3, out: 42,
		total: 1500 * time.Microsecond, app: 1200 * time.Microsecond, key: "al ice", hasKey: true,
		worker: 3, route: RouteForwarded,
	}
	got := string(appendText(nil, &e))
	want := `2026-12-01T14:10:00.123Z 127.0.0.1:5555 "GET /p?q=\"x\"\n HTTP/1.1" 200 3 42 0.001500 0.001200 "al ice" 3 forwarded` + "\n"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	e.app, e.hasKey, e.worker, e.route = -1, false, workerAll, RouteFanout
	if got := string(appendText(nil, &e)); !strings.HasSuffix(got, " 0.001500 - - * fan-out\n") {
		t.Errorf("got %q", got)
	}
}

// A writer that falls behind (here: a pipe nobody reads) never blocks a request: lines past
// the queue are dropped and counted.
func TestAccessLogDropsWhenBehind(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var dropped atomic.Uint64
	l := startAccessLog(pw, "pipe", "text", &dropped, slog.New(slog.DiscardHandler))
	e := accessEntry{start: time.Now(), method: "GET", uri: "/" + strings.Repeat("x", 1000), worker: 0, route: RouteLocal}
	added := make(chan struct{})
	go func() {
		defer close(added)
		for i := 0; i < 4*accessQueue; i++ {
			l.add(&e)
		}
	}()
	select {
	case <-added:
	case <-time.After(10 * time.Second):
		t.Fatal("adding lines blocked on a writer that is behind")
	}
	if dropped.Load() == 0 {
		t.Fatalf("no line dropped: the pipe (64 KiB) and queue (%d lines) took %d lines of 1 KiB", accessQueue, 4*accessQueue)
	}
	go func() { // let the writer finish, so that close returns
		buf := make([]byte, 1<<16)
		for {
			if _, err := pr.Read(buf); err != nil {
				return
			}
		}
	}()
	l.close()
	l.close() // safe twice
}

// A long field is cut to accessFieldMax and marked; a queued entry holds none of the
// request's strings (a short method or key is a substring of a long request line), and
// the queue is bounded in bytes: past accessQueueBytes, entries are dropped and counted.
func TestAccessLogByteBound(t *testing.T) {
	line := "GET /" + strings.Repeat("x", 900<<10) + "?k=alice HTTP/1.1" // as net/http reads it
	e := accessEntry{start: time.Now(), client: "127.0.0.1:1", method: line[:3], uri: line[4 : len(line)-9],
		proto: line[len(line)-8:], key: line[len(line)-14 : len(line)-9], hasKey: true, worker: 0, route: RouteLocal}
	q := e
	q.detach()
	lo, hi := uintptr(unsafe.Pointer(unsafe.StringData(line))), uintptr(unsafe.Pointer(unsafe.StringData(line)))+uintptr(len(line))
	for _, f := range []string{q.method, q.uri, q.proto, q.key} {
		if p := uintptr(unsafe.Pointer(unsafe.StringData(f))); p >= lo && p < hi {
			t.Errorf("field %.20q still points into the request line", f)
		}
	}
	if q.method != "GET" || q.proto != "HTTP/1.1" || q.key != "alice" {
		t.Errorf("detached fields: %q %q %q", q.method, q.proto, q.key)
	}
	wantURI := "/" + strings.Repeat("x", accessFieldMax-1) + "…[cut: " + strconv.Itoa(len(e.uri)) + " bytes]"
	if q.uri != wantURI {
		t.Errorf("cut URI %.40q… (%d bytes), want %d bytes ending in the mark", q.uri, len(q.uri), len(wantURI))
	}
	if got := appendText(nil, &q); len(got) > 2*accessFieldMax {
		t.Errorf("a line of %d bytes for a 900 KiB URI", len(got))
	}

	// A writer stuck in a write (a pipe nobody reads): the queue fills by bytes.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var dropped atomic.Uint64
	l := startAccessLog(pw, "pipe", "text", &dropped, slog.New(slog.DiscardHandler))
	const n = 3000 // each about 4.3 KiB queued: past 4 MiB, well before accessQueue lines
	for i := 0; i < n; i++ {
		l.add(&e)
		if q := l.queued.Load(); q > accessQueueBytes {
			t.Fatalf("%d bytes queued, more than the bound %d", q, accessQueueBytes)
		}
	}
	if d := dropped.Load(); d == 0 || d == n {
		t.Errorf("%d of %d lines dropped; want some: the bound is %d bytes", d, n, accessQueueBytes)
	}
	go io.Copy(io.Discard, pr) // let the writer finish, so that close returns
	l.close()
	if q := l.queued.Load(); q != 0 {
		t.Errorf("%d bytes still counted as queued after close", q)
	}
}

// diskFull is a file on a disk that fills up: while full, it takes room more bytes, then
// fails with ENOSPC.
type diskFull struct {
	bytes.Buffer
	full bool
	room int
}

func (d *diskFull) Write(p []byte) (int, error) {
	if !d.full {
		return d.Buffer.Write(p)
	}
	n := min(len(p), d.room)
	d.room -= n
	d.Buffer.Write(p[:n])
	if n < len(p) {
		return n, syscall.ENOSPC
	}
	return n, nil
}

// A write that fails (a full disk) drops its lines, counted, and says so at most every
// reportEvery with the count; the next write tries again, starting a new line after a
// torn one, and says how many were lost once it succeeds.
func TestAccessLogWriteFailureResumes(t *testing.T) {
	var disk diskFull
	var logged bytes.Buffer
	var dropped atomic.Uint64
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	o := &accessOut{w: &disk, dropped: &dropped, path: "access.log", now: func() time.Time { return now },
		logger: slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}))}
	write := func(lines ...string) {
		for _, l := range lines {
			o.add([]byte(l + "\n"))
		}
		o.flush()
	}
	messages := func() []string { return strings.Split(strings.TrimSuffix(logged.String(), "\n"), "\n") }

	write("a")
	disk.full, disk.room = true, 3
	write("bbbb", "cc") // "bbb" written, then ENOSPC
	write("d")          // within reportEvery: counted, not said again
	if g, e := dropped.Load(), uint64(3); g != e {
		t.Errorf("dropped %d, want %d", g, e)
	}
	if m := messages(); len(m) != 1 || !strings.Contains(m[0], "access log: write failed") || !strings.Contains(m[0], "dropped=2") ||
		!strings.Contains(m[0], "no space left on device") {
		t.Fatalf("messages %q; want one write failure with dropped=2 and the error", m)
	}
	now = now.Add(reportEvery)
	write("e")
	if m := messages(); len(m) != 2 || !strings.Contains(m[1], "write failed") || !strings.Contains(m[1], "dropped=2") {
		t.Fatalf("messages %q; want a second failure %s later, with the 2 dropped since the first", m, reportEvery)
	}
	disk.full = false // space freed
	write("f")
	write("g")
	if m := messages(); len(m) != 3 || !strings.Contains(m[2], "access log: writing again") || !strings.Contains(m[2], "dropped=4") {
		t.Fatalf("messages %q; want writing again, after 4 dropped", m)
	}
	if g, e := disk.String(), "a\nbbb\nf\ng\n"; g != e {
		t.Errorf("file %q, want %q (the torn line ended, the writes resumed)", g, e)
	}
	if g, e := dropped.Load(), uint64(4); g != e {
		t.Errorf("dropped %d, want %d", g, e)
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
	if err := r.alog.Load().reopen(); err != nil {
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
		startApp(&a.w)
		a.w.WriteHeader(200)
		a.w.Write([]byte("ok"))
		a.end()
	}
	b.StopTimer()
	b.ReportMetric(float64(r.counters.accessDropped.Load())/float64(b.N), "dropped/op")
}

// The writer goroutine's work per line (format, buffered write to a file): its capacity is
// 1 s divided by this; past it, lines are dropped.
func BenchmarkAccessLogWriter(b *testing.B) {
	for _, format := range []string{"text", "json"} {
		b.Run(format, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "access.log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			l := &accessLog{format: format}
			bw := bufio.NewWriterSize(f, 64<<10)
			e := accessEntry{start: time.Now(), client: "127.0.0.1:44354", method: "GET", uri: "/cart?item=7",
				proto: "HTTP/1.1", status: 200, out: 238, total: time.Millisecond, app: 900 * time.Microsecond,
				key: "alice", hasKey: true, worker: 1, route: RouteForwarded}
			var line []byte
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				line = l.format1(line[:0], &e)
				bw.Write(line)
			}
			bw.Flush()
		})
	}
}
