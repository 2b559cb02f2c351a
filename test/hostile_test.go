package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/olio-dev/olio/listener"
	"github.com/olio-dev/olio/router/process"
)

// Hostile clients and broken apps: limits, timeouts, faults, secrets. Every test
// runs a small cluster on loopback and takes a few seconds.

// hostileAppArg, as the test binary's first argument, makes it run hostileApp instead of
// the tests: an app whose behaviour the tests control and whose view they can read.
const hostileAppArg = "olio-hostile-app"

func init() {
	if len(os.Args) > 1 && os.Args[1] == hostileAppArg {
		os.Exit(hostileApp(os.Args[2:]))
	}
}

// hostileApp serves on $PORT like the demo app (same JSON answer), and also:
//
//	-record FILE.<index>  appends "REQ METHOD PATH BODYBYTES" for every request it reads,
//	                      and "CANCEL PATH" when a ?sleep request is cancelled
//	-env FILE.<index>     gets the app's environment, one VAR=value a line
//	/exit0                answers, then exits 0
//	/reset                resets the connection without an answer
//	/unlisten             answers, then closes its listening socket and keeps running
//	/big?bytes=N          streams N bytes
//	/drip?ms=N            sends its header at once, then a byte every 100ms for N ms
//	/ws                   is a WebSocket echo
//	?sleep=MS             waits MS milliseconds (or until the request is cancelled)
//	/extra, /lf, /runclose  raw answers: see rawAnswer
func hostileApp(args []string) int {
	var record, envFile string
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "-record":
			record = args[i+1]
		case "-env":
			envFile = args[i+1]
		}
	}
	index, _ := strconv.Atoi(os.Getenv("OLIO_INDEX"))
	suffix := "." + os.Getenv("OLIO_INDEX")
	if envFile != "" {
		if err := os.WriteFile(envFile+suffix, []byte(strings.Join(os.Environ(), "\n")+"\n"), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	var mu sync.Mutex
	var rec *os.File
	unlisten := make(chan struct{}) // closed by /unlisten
	var unlistenOnce sync.Once
	if record != "" {
		f, err := os.OpenFile(record+suffix, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		rec = f
	}
	note := func(format string, a ...any) {
		if rec != nil {
			mu.Lock()
			fmt.Fprintf(rec, format+"\n", a...)
			mu.Unlock()
		}
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		note("REQ %s %s %d", r.Method, r.URL.Path, n)
		if rawAnswer(w, r, note) { // hostile_round3_app_test.go
			return
		}
		q := r.URL.Query()
		if ms, err := strconv.Atoi(q.Get("sleep")); err == nil {
			t := time.NewTimer(time.Duration(ms) * time.Millisecond)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				note("CANCEL %s", r.URL.Path)
				return
			}
		}
		switch r.URL.Path {
		case "/unlisten":
			// Answers, then closes the listening socket and keeps running.
			w.WriteHeader(http.StatusOK)
			unlistenOnce.Do(func() { close(unlisten) })
			return
		case "/reset":
			// No answer: the connection is reset (SO_LINGER 0), as by an app that crashes.
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			if tc, ok := conn.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			conn.Close()
			return
		case "/ws":
			up := websocket.Upgrader{}
			ws, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer ws.Close()
			for {
				kind, m, err := ws.ReadMessage()
				if err != nil || ws.WriteMessage(kind, m) != nil {
					return
				}
			}
		case "/drip":
			// The header at once, then a byte every 100ms for ?ms.
			ms, _ := strconv.Atoi(q.Get("ms"))
			w.WriteHeader(http.StatusOK)
			rc := http.NewResponseController(w)
			rc.Flush()
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for end := time.Now().Add(time.Duration(ms) * time.Millisecond); time.Now().Before(end); {
				select {
				case <-t.C:
				case <-r.Context().Done():
					note("CANCEL %s", r.URL.Path)
					return
				}
				if _, err := w.Write([]byte("d")); err != nil || rc.Flush() != nil {
					return
				}
			}
			return
		case "/big":
			size, _ := strconv.Atoi(q.Get("bytes"))
			buf := bytes.Repeat([]byte("x"), 32<<10)
			for size > 0 {
				k := min(size, len(buf))
				if _, err := w.Write(buf[:k]); err != nil {
					return
				}
				size -= k
			}
			return
		}
		headers := map[string]string{}
		for k, v := range r.Header {
			headers[k] = v[0]
		}
		b, _ := json.Marshal(Answer{Index: index, PID: os.Getpid(), Method: r.Method, Path: r.URL.Path, Headers: headers, BodyBytes: n})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
		if r.URL.Path == "/exit0" {
			http.NewResponseController(w).Flush()
			os.Exit(0)
		}
	})
	return serveApp(h, unlisten)
}

// serveApp is the test apps' main loop: it serves h on 127.0.0.1:$PORT until SIGTERM or
// SIGINT, and returns the exit status. When unlisten is closed (nil: never) it closes its
// listening socket and keeps running without one until the signal.
func serveApp(h http.Handler, unlisten <-chan struct{}) int {
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: h}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		select {
		case <-ctx.Done():
		case <-unlisten:
			ln.Close()
			<-ctx.Done()
		}
		srv.Close()
	}()
	srv.Serve(ln)
	<-ctx.Done() // after unlisten, the app keeps running without a listener
	return 0
}

// hostileAppArgs is the app part of `olio serve` that runs hostileApp with extra args.
func hostileAppArgs(t *testing.T, args ...string) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"--", exe, hostileAppArg}, args...)
}

// quick is a client for requests that must answer soon; it opens a fresh connection for
// every request.
var quick = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// raw sends raw bytes on a new connection and reads one response.
func (c *Cluster) raw(t *testing.T, req string) (*http.Response, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	go io.WriteString(conn, req) // a huge header may not be read in full before the answer
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to %.60q…: %v", req, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// fds counts pid's open file descriptors, -1 if it is gone.
func fds(pid int) int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// hostileStart starts a cluster of n workers of the hostile app and returns it with the
// record file prefix.
func hostileStart(t *testing.T, n int, flags ...string) (*Cluster, string) {
	t.Helper()
	record := filepath.Join(t.TempDir(), "record")
	args := append([]string{"--workers", strconv.Itoa(n)}, flags...)
	args = append(args, hostileAppArgs(t, "-record", record)...)
	return Start(t, args...), record
}

func readRecords(prefix string, n int) string {
	var all strings.Builder
	for i := 0; i < n; i++ {
		b, _ := os.ReadFile(prefix + "." + strconv.Itoa(i))
		all.Write(b)
	}
	return all.String()
}

// TestHostileHeaderTooLarge: a request header just past --max-header-bytes gets 431 and one
// just under it gets its answer, on either router, served locally or forwarded. "Just past"
// is what net/http can enforce: it reads up to 4 KiB more than its MaxHeaderBytes on a new
// connection before it gives up, and up to 8 KiB more on a kept-alive one. So with a limit
// of 8 KiB, 1.5× the limit is refused on a new connection and 2× on a kept-alive one: a
// router that takes twice the limit, or the peer side's larger one, fails here, where a
// header of 8× the limit would not tell.
func TestHostileHeaderTooLarge(t *testing.T) {
	t.Parallel()
	const limit = 8192
	c, _ := hostileStart(t, 2, "--max-header-bytes", strconv.Itoa(limit))
	header := func(size int) string {
		return "GET / HTTP/1.1\r\nHost: x\r\nX-Olio-Key: a\r\nX-Big: " + strings.Repeat("b", size) + "\r\n\r\n"
	}
	for _, size := range []int{limit + limit/2, 8 * limit} {
		for try := 0; try < 4; try++ { // new connections, taken by either router
			resp, _ := c.raw(t, header(size))
			if g, e := resp.StatusCode, http.StatusRequestHeaderFieldsTooLarge; g != e {
				t.Errorf("a %d-byte header on a new connection with --max-header-bytes %d: status %d, want %d", size, limit, g, e)
			}
		}
	}
	for from := 0; from < 2; from++ {
		nc, _ := pinnedConn(t, c, from) // kept alive after its probe
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		go io.WriteString(nc, header(2*limit)) // a huge header may not be read in full before the answer
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatalf("a %d-byte header to router %d: no answer: %v", 2*limit, from, err)
		}
		resp.Body.Close()
		if g, e := resp.StatusCode, http.StatusRequestHeaderFieldsTooLarge; g != e {
			t.Errorf("a %d-byte header on a kept-alive connection to router %d with --max-header-bytes %d: status %d, want %d", 2*limit, from, limit, g, e)
		}
	}
	// Just under the limit passes, served locally and forwarded to the peer (the pinned
	// connection's first request was the probe, so it is not handed off).
	for from := 0; from < 2; from++ {
		hc, _ := pinnedClient(t, c, from)
		for to := 0; to < 2; to++ {
			req, _ := http.NewRequest("GET", c.URL()+"/", nil)
			req.Header.Set("X-Olio-Key", keyOwnedBy(to, 2))
			req.Header.Set("X-Big", strings.Repeat("b", limit-1024))
			a, err := Do(hc, req)
			switch {
			case err != nil:
				t.Errorf("a %d-byte header via router %d for worker %d: %v", limit-1024, from, to, err)
			case a.Index != to:
				t.Errorf("a %d-byte header via router %d for worker %d: served by %d", limit-1024, from, to, a.Index)
			}
		}
	}
}

func TestHostileMalformed(t *testing.T) {
	t.Parallel()
	c, record := hostileStart(t, 2)
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"garbage request line", "HELLO\r\n\r\n", 400},
		{"header without colon", "GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400},
		{"space in header name", "GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400},
		{"no Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", 400},
		{"control byte in path", "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"bad HTTP version", "GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505},
		{"two different Content-Lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"non-numeric Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\nab", 400},
		{"unknown Transfer-Encoding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
		{"two Transfer-Encodings", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501},
		{"bad chunk size", "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400},
	} {
		resp, body := c.raw(t, tc.req)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d (%q), want %d", tc.name, resp.StatusCode, strings.TrimSpace(body), tc.status)
		}
	}
	// None of them reached an app, except the bad chunk size, whose header was fine: the
	// app read a broken body and the client got 400 from the router.
	for _, line := range strings.Split(strings.TrimSpace(readRecords(record, 2)), "\n") {
		if line != "" && !strings.HasPrefix(line, "REQ POST /x ") {
			t.Errorf("a malformed request reached the app: %q", line)
		}
	}
}

// TestHostileSmuggling sends requests whose framing differs between Content-Length and
// Transfer-Encoding, with a request hidden in the body, through the forwarding hop. The app
// must see exactly one request per request the client sent.
func TestHostileSmuggling(t *testing.T) {
	t.Parallel()
	c, record := hostileStart(t, 2)
	hidden := "GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Olio-Index: 0\r\n\r\n"
	chunked := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(hidden), hidden)
	for i := 0; i < 2; i++ {
		for try := 0; try < 4; try++ { // the accepting router varies: most go through a hop
			key := keyOwnedBy(i, 2)
			for _, framing := range []string{
				"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
				"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
				"Content-Length: " + strconv.Itoa(len(chunked)+len(hidden)) + "\r\nTransfer-Encoding: chunked\r\n",
			} {
				req := "POST /first HTTP/1.1\r\nHost: x\r\nX-Olio-Key: " + key + "\r\n" + framing + "\r\n" + chunked + hidden
				conn, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(conn, req)
				br := bufio.NewReader(conn)
				// The chunked framing wins: one POST with the hidden request as its body…
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("worker %d: %v", i, err)
				}
				var a Answer
				json.NewDecoder(resp.Body).Decode(&a)
				resp.Body.Close()
				if resp.StatusCode != 200 || a.Path != "/first" || a.BodyBytes != int64(len(hidden)) || a.Index != i {
					t.Errorf("worker %d, framing %q: status %d, answer %+v; want /first from worker %d with a %d-byte body",
						i, framing, resp.StatusCode, a, i, len(hidden))
				}
				// …and the bytes after it, if the router reads them at all, are a request of
				// the client's own, routed (and stripped of X-Olio-Index) like any other.
				if resp, err := http.ReadResponse(br, nil); err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusForbidden {
						t.Errorf("worker %d: the trailing request without a secret got %d, want 403", i, resp.StatusCode)
					}
				}
				conn.Close()
			}
		}
	}
	recs := readRecords(record, 2)
	if strings.Contains(recs, "/smuggled") {
		t.Errorf("a request hidden in a body reached an app:\n%s", recs)
	}
	if g, e := strings.Count(recs, "REQ POST /first "+strconv.Itoa(len(hidden))), 2*4*3; g != e {
		t.Errorf("the apps saw %d POST /first with the whole body, want %d:\n%s", g, e, recs)
	}
}

// dialWrite opens a connection to olio, writes s on it and returns it; the test closes it.
func (c *Cluster) dialWrite(t *testing.T, s string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, s); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestHostileHeaderTimeout: --header-timeout closes a connection whose header does not come
// in time (the default, 10s, would outlast the read deadline below), and --idle-timeout one
// that stays idle after a request.
func TestHostileHeaderTimeout(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "1", "--header-timeout", "300ms", "--idle-timeout", "300ms")
	slow := c.dialWrite(t, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	idle := c.dialWrite(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil {
		t.Fatalf("idle connection's request: %v", err)
	}
	resp.Body.Close()
	for name, conn := range map[string]net.Conn{"slow header": slow, "idle keep-alive": idle} {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadAll(conn) // whatever the router says, then its close
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s connection still open after 5s with a 300ms timeout", name)
		}
	}
}

// TestHostileOutputGone: olio's output is a pipe whose reader goes away (as with
// `olio serve 2>&1 | head`). Every later log line fails with EPIPE; olio keeps serving,
// reloads, and stops with exit status 0 instead of dying of SIGPIPE.
func TestHostileOutputGone(t *testing.T) {
	t.Parallel()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c := startWith(t, pw, "--workers", "2")
	pw.Close() // olio holds the write end now
	pr.SetReadDeadline(time.Now().Add(30 * time.Second))
	lines := bufio.NewReader(pr)
	for {
		line, err := lines.ReadString('\n')
		if err != nil {
			t.Fatalf("waiting for olio to be ready: %v", err)
		}
		if strings.Contains(line, "all workers ready") {
			break
		}
	}
	pr.Close()
	before := opAppPIDs(opStatus(t, c))
	if out, err := opCLI(t, "reload", "--control", c.Control); err != nil { // logs a line per worker
		t.Fatalf("olio reload with its output gone: %v\n%s", err, out)
	}
	after := opAppPIDs(opStatus(t, c))
	for i := range before {
		if after[i] == before[i] {
			t.Errorf("worker %d: app pid %d not replaced by the reload", i, before[i])
		}
	}
	for i := 0; i < 20; i++ {
		key := "gone-" + strconv.Itoa(i)
		if a, err := c.getKey(quick, "/", key); err != nil || a.Index != Owner(key, 2) {
			t.Fatalf("request %d with olio's output gone: %+v, %v", i, a, err)
		}
	}
	if err := c.Stop(30 * time.Second); err != nil {
		t.Errorf("olio exited with %v after its output went away, want status 0", err)
	}
}

// TestHostileNotifyNoLeak: with --ready notify, an app that never says READY=1 is retried
// with backoff; each failed start's notify socket (and its goroutine and fd) goes with it.
func TestHostileNotifyNoLeak(t *testing.T) {
	t.Parallel()
	c := StartNoWait(t, "--workers", "1", "--ready", "notify", "--ready-timeout", "300ms",
		"--", "/bin/sh", "-c", "exec sleep 1000")
	const failed = `msg="not ready, stopping"`
	if !Eventually(30*time.Second, func() bool { return c.CountLog(failed) >= 5 }) {
		t.Fatalf("fewer than 5 failed starts in 30s")
	}
	dir := c.runDir(t)
	var socks []string
	if !Eventually(5*time.Second, func() bool {
		socks = process.RunDir(dir).NotifySockets()
		return len(socks) <= 2 // the current start's, and one whose app is still being stopped
	}) {
		t.Errorf("%d notify sockets after %d failed starts: %v", len(socks), c.CountLog(failed), socks)
	}
}

// TestHostileAppNeverReadyKeepsRouter: an app that never gets ready is the router's to
// retry, with a growing backoff; the master leaves the router alone (it used to restart it
// after the ready timeout plus 10s, which reset the app's backoff and hid its crash loop).
func TestHostileAppNeverReadyKeepsRouter(t *testing.T) {
	t.Parallel()
	c := StartNoWait(t, "--workers", "1", "--ready-timeout", "300ms", "--", "/bin/sh", "-c", "exec sleep 1000")
	const failed = `msg="not ready, stopping"`
	if !Eventually(20*time.Second, func() bool { return c.CountLog(failed) >= 1 }) {
		t.Fatalf("the app was not even tried in 20s")
	}
	first := opStatus(t, c).Workers[0].RouterPID
	// 8 failed starts take about 15s with the backoff: past the old 10.3s.
	if !Eventually(40*time.Second, func() bool { return c.CountLog(failed) >= 8 }) {
		t.Fatalf("fewer than 8 failed starts in 40s")
	}
	st := opStatus(t, c).Workers[0]
	if st.RouterPID != first || c.CountLog("router exited") > 0 {
		t.Errorf("router pid %d at the first failed start, %d after 8; the master restarted it", first, st.RouterPID)
	}
	if !st.CrashLooping {
		t.Errorf("status after 8 failed starts: %+v, want crash_looping", st)
	}
}

// TestHostileExpectContinueOnce: a client that sends "Expect: 100-continue" gets one
// 100 Continue, whether its key's owner is the router that accepted it or another.
func TestHostileExpectContinueOnce(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2", "--handoff=false")
	for i := 0; i < 2; i++ {
		key := keyOwnedBy(i, 2)
		conn, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: t\r\nX-Olio-Key: %s\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n", key)
		br := bufio.NewReader(conn)
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
			t.Fatalf("key %s: first line %q, %v; want 100 Continue", key, line, err)
		}
		io.WriteString(conn, "hello")
		rest, _ := io.ReadAll(br)
		conn.Close()
		if n := strings.Count(string(rest), "HTTP/1.1 100"); n != 0 {
			t.Errorf("key %s: %d more 100 Continue after the first:\n%s", key, n, rest)
		}
		if !strings.Contains(string(rest), "HTTP/1.1 200") || !strings.Contains(string(rest), `"body_bytes":5`) {
			t.Errorf("key %s: no 200 with the 5-byte body:\n%s", key, rest)
		}
	}
}

// TestHostileStopWithWebSocket: an open WebSocket does not hold a graceful stop past
// --shutdown-timeout, and the app still gets its SIGTERM (the demo then closes the
// WebSocket with "server shutting down") instead of dying with its router.
func TestHostileStopWithWebSocket(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2", "--shutdown-timeout", "1s")
	var conns []*websocket.Conn
	for i := 0; i < 2; i++ {
		hdr := http.Header{"X-Olio-Key": {keyOwnedBy(i, 2)}}
		ws, resp, err := websocket.DefaultDialer.Dial("ws://"+c.Addr+"/ws", hdr)
		if err != nil {
			t.Fatalf("websocket to worker %d: %v", i, err)
		}
		resp.Body.Close()
		defer ws.Close()
		conns = append(conns, ws)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- c.Stop(30 * time.Second) }()
	for i, ws := range conns {
		ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, _, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || !strings.Contains(ce.Text, "shutting down") {
			t.Errorf("websocket %d ended with %v, want the app's close frame (it got SIGTERM)", i, err)
		}
	}
	if err := <-stopped; err != nil {
		t.Errorf("olio exited with %v, want 0", err)
	}
}

func TestHostileSlowloris(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	const n = 300
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	for i := 0; i < n; i++ {
		conn, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
		if err != nil {
			t.Fatalf("slow connection %d: %v", i, err)
		}
		conns = append(conns, conn)
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 20; i++ {
		key := "user-" + strconv.Itoa(i)
		if a, err := c.getKey(quick, "/", key); err != nil {
			t.Errorf("request %d with %d slow-loris connections open: %v", i, n, err)
		} else if a.Index != Owner(key, 2) {
			t.Errorf("key %s answered by worker %d", key, a.Index)
		}
	}
}

func TestHostileMaxConns(t *testing.T) {
	t.Parallel()
	// A strict per-router bound needs --handoff=false: a connection handed to its owner
	// frees the accepting router's slot and does not count against the owner's.
	c := Start(t, "--workers", "2", "--max-conns", "3", "--handoff=false")
	// Six held keep-alive connections fill both routers.
	var held []*http.Client
	for i := 0; i < 6; i++ {
		cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1}}
		held = append(held, cl)
		if _, err := c.getKey(cl, "/", "held"); err != nil {
			t.Fatalf("held connection %d: %v", i, err)
		}
	}
	// A seventh waits in the backlog…
	short := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	if _, err := c.getKey(short, "/", "x"); err == nil {
		t.Errorf("a seventh connection was served while 2 routers × --max-conns 3 were held")
	}
	// …until one of the held ones closes.
	held[0].CloseIdleConnections()
	if _, err := c.getKey(quick, "/", "x"); err != nil {
		t.Errorf("after a held connection closed: %v", err)
	}
	for _, cl := range held {
		cl.CloseIdleConnections()
	}
}

// TestHostileHungApp: an app that does not answer gets 504 near --request-timeout, is told
// so by the cancellation of its request, and the worker keeps serving.
//
// Not in parallel: it bounds how long the 504 takes.
func TestHostileHungApp(t *testing.T) {
	c, record := hostileStart(t, 2, "--request-timeout", "1s")
	for i := 0; i < 2; i++ {
		key := keyOwnedBy(i, 2)
		start := time.Now()
		req, _ := http.NewRequest("GET", c.URL()+"/hang?sleep=5000", nil)
		req.Header.Set("X-Olio-Key", key)
		resp, err := quick.Do(req)
		if err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "did not answer within 1s") {
			t.Errorf("worker %d: status %d %q, want 504 naming the timeout", i, resp.StatusCode, body)
		}
		if took < 900*time.Millisecond || took > 4*time.Second {
			t.Errorf("worker %d: 504 after %s, want about 1s", i, took)
		}
		if a, err := c.getKey(quick, "/", key); err != nil || a.Index != i {
			t.Errorf("worker %d after a 504: %+v, %v", i, a, err)
		}
	}
	if !Eventually(5*time.Second, func() bool { return strings.Count(readRecords(record, 2), "CANCEL /hang") == 2 }) {
		t.Errorf("the apps' requests were not cancelled at the timeout:\n%s", readRecords(record, 2))
	}
}

// TestHostileTimeoutBoundsTheAnswer: --request-timeout bounds the wait for the app's
// answer, not a long answer nor a WebSocket.
//
// Not in parallel: how much of the dripped answer comes in 2s depends on the machine's load.
func TestHostileTimeoutBoundsTheAnswer(t *testing.T) {
	c, record := hostileStart(t, 1, "--request-timeout", "1s")
	req, _ := http.NewRequest("GET", c.URL()+"/drip?ms=2000", nil)
	resp, err := quick.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || err != nil || len(body) < 15 {
		t.Errorf("a 2s answer with --request-timeout 1s: status %d, %d bytes, %v", resp.StatusCode, len(body), err)
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+c.Addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := ws.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
			t.Fatalf("WebSocket write past --request-timeout: %v", err)
		}
		if _, m, err := ws.ReadMessage(); err != nil || string(m) != "ping" {
			t.Fatalf("WebSocket read past --request-timeout: %q, %v", m, err)
		}
	}
	if strings.Contains(readRecords(record, 1), "CANCEL") {
		t.Errorf("an answer under way was cancelled:\n%s", readRecords(record, 1))
	}
}

// TestHostileHealthRecycle: an app that stops answering altogether (SIGSTOP) is replaced
// after --health-timeout.
func TestHostileHealthRecycle(t *testing.T) {
	t.Parallel()
	c, _ := hostileStart(t, 2, "--health-timeout", "1s", "--shutdown-timeout", "2s", "--request-timeout", "2s")
	key := keyOwnedBy(0, 2)
	a, err := c.getKey(quick, "/", key)
	if err != nil {
		t.Fatal(err)
	}
	old := a.PID
	if err := syscall.Kill(old, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(old, syscall.SIGCONT)
	short := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if !Eventually(20*time.Second, func() bool {
		a, err := c.getKey(short, "/", key)
		return err == nil && a.PID != old && a.Index == 0
	}) {
		t.Fatalf("worker 0's stopped app %d was not replaced", old)
	}
	c.WaitLog("app not answering health probes: recycling it", 5*time.Second)
	if !Eventually(10*time.Second, func() bool { return len(alive([]int{old})) == 0 }) {
		t.Errorf("the silent app %d is still there", old)
	}
	if _, err := c.getKey(quick, "/", keyOwnedBy(1, 2)); err != nil {
		t.Errorf("worker 1: %v", err)
	}
}

// TestHostileHUPDrainsAppThatDiesOnTerm: the test app drops its connections the moment it
// gets SIGTERM, as an app without a graceful stop does, so a rolling restart must let the
// old app finish its in-flight requests before it stops it: the demo app drains on SIGTERM
// by itself, which would hide a router that does not wait. The requests are POSTs with a
// body, which olio never repeats, so each answer comes from the old app or not at all.
func TestHostileHUPDrainsAppThatDiesOnTerm(t *testing.T) {
	t.Parallel()
	const workers = 2
	c, _ := hostileStart(t, workers)
	old := appPIDs(t, c, workers)
	answers := make(chan error, workers)
	for i := 0; i < workers; i++ {
		go func() {
			req := keyRequest(c, "POST", "", strings.NewReader("payload"))
			req.URL.RawQuery = "sleep=5000"
			req.Header.Set("X-Olio-Index", strconv.Itoa(i))
			req.Header.Set("X-Olio-Secret", c.Secret)
			a, err := Do(client, req)
			if err == nil && a.PID != old[i] {
				err = fmt.Errorf("answered by app pid %d, want the old app %d", a.PID, old[i])
			}
			answers <- err
		}()
	}
	if !Eventually(10*time.Second, func() bool { return inFlight(t, c, 0) > 0 && inFlight(t, c, 1) > 0 }) {
		t.Fatal("the POSTs never reached both apps")
	}
	done := c.CountLog("rolling restart done")
	c.Signal(syscall.SIGHUP)
	for i := 0; i < workers; i++ {
		var err error
		select {
		case err = <-answers:
		case <-time.After(60 * time.Second):
			t.Fatalf("a POST in flight when HUP came still unanswered after 60s")
		}
		if err != nil {
			t.Errorf("a POST in flight in an app when HUP came: %v", err)
		}
	}
	if !Eventually(30*time.Second, func() bool { return c.CountLog("rolling restart done") > done }) {
		t.Fatal("no rolling restart done within 30s of SIGHUP")
	}
	for i, pid := range appPIDs(t, c, workers) {
		if pid == old[i] {
			t.Errorf("worker %d still runs app %d after the rolling restart: the test did not test anything", i, pid)
		}
	}
}

// TestHostileCrashLoop: an app that cannot start leaves the master up, is reported, and its
// keys get 503 after --forward-timeout while the other workers serve.
func TestHostileCrashLoop(t *testing.T) {
	t.Parallel()
	script := `if [ "$OLIO_INDEX" = 1 ]; then echo "app 1 cannot start" >&2; exit 1; fi; exec '` + olioBin + `' demo`
	c := StartNoWait(t, "--workers", "2", "--forward-timeout", "1s", "--", "sh", "-c", script)
	good, bad := keyOwnedBy(0, 2), keyOwnedBy(1, 2)
	if !Eventually(20*time.Second, func() bool { _, err := c.getKey(quick, "/", good); return err == nil }) {
		t.Fatalf("worker 0 never served")
	}
	opWaitStatus(t, c, 20*time.Second, "worker 1 crash-looping", func(st *listener.Status) bool {
		return len(st.Workers) == 2 && st.Workers[1].CrashLooping
	})
	start := time.Now()
	req, _ := http.NewRequest("GET", c.URL()+"/", nil)
	req.Header.Set("X-Olio-Key", bad)
	resp, err := quick.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("crash-looping worker's key: status %d, Retry-After %q; want 503 with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("503 after %s, before --forward-timeout 1s", took)
	}
	if a, err := c.getKey(quick, "/", good); err != nil || a.Index != 0 {
		t.Errorf("the healthy worker: %+v, %v", a, err)
	}
	if c.hasExited() {
		t.Fatalf("the master exited because one app crash-loops")
	}
	if c.CountLog("app 1 cannot start") < 3 {
		t.Errorf("the crashing app was not retried (its output appeared %d times)", c.CountLog("app 1 cannot start"))
	}
}

// TestHostileAppExitsZero: an app that exits 0 on its own is restarted.
func TestHostileAppExitsZero(t *testing.T) {
	t.Parallel()
	c, _ := hostileStart(t, 2)
	key := keyOwnedBy(1, 2)
	a, err := c.getKey(quick, "/", key)
	if err != nil {
		t.Fatal(err)
	}
	c.getKey(quick, "/exit0", key) // the answer may or may not make it
	if !Eventually(10*time.Second, func() bool {
		b, err := c.getKey(quick, "/", key)
		return err == nil && b.PID != a.PID && b.Index == 1
	}) {
		t.Fatalf("worker 1's app %d exited 0 and no new one serves", a.PID)
	}
}

// TestHostileClientDisconnect: clients that go away mid-body, mid-response and before the
// answer leave no descriptor behind in any router.
func TestHostileClientDisconnect(t *testing.T) {
	t.Parallel()
	c, _ := hostileStart(t, 2)
	routers := c.routers()
	if len(routers) != 2 {
		t.Fatalf("routers: %v", routers)
	}
	keys := []string{keyOwnedBy(0, 2), keyOwnedBy(1, 2)}
	for _, key := range keys { // warm the keep-alive pools on both legs
		for i := 0; i < 5; i++ {
			if _, err := c.getKey(client, "/", key); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := map[int]int{}
	for i, pid := range routers {
		before[i] = fds(pid)
	}
	dial := func() net.Conn {
		conn, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		return conn
	}
	for round := 0; round < 10; round++ {
		for _, key := range keys {
			// Mid-body: promise a megabyte, send 64 KiB, hang up.
			conn := dial()
			io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nX-Olio-Key: "+key+"\r\nContent-Length: 1048576\r\n\r\n")
			conn.Write(make([]byte, 64<<10))
			conn.Close()
			// Mid-response: ask for 64 MiB, read 64 KiB, hang up.
			conn = dial()
			io.WriteString(conn, "GET /big?bytes=67108864 HTTP/1.1\r\nHost: x\r\nX-Olio-Key: "+key+"\r\n\r\n")
			io.ReadFull(conn, make([]byte, 64<<10))
			conn.Close()
			// Before the answer.
			conn = dial()
			io.WriteString(conn, "GET /wait?sleep=10000 HTTP/1.1\r\nHost: x\r\nX-Olio-Key: "+key+"\r\n\r\n")
			conn.Close()
		}
	}
	for _, key := range keys {
		if _, err := c.getKey(client, "/", key); err != nil {
			t.Errorf("after the disconnects: %v", err)
		}
	}
	client.CloseIdleConnections()
	const slack = 4 // keep-alive connections to the app and to peers come and go
	for i, pid := range routers {
		var n int
		if !Eventually(10*time.Second, func() bool { n = fds(pid); return n <= before[i]+slack }) {
			t.Errorf("router %d (pid %d): %d open descriptors after 60 broken requests, %d before", i, pid, n, before[i])
		}
	}
}

// TestHostileKillRouterUnderLoad: kill -9 of a router under load: its app goes with it,
// the master starts a new one, every key answers again and nothing piles up.
func TestHostileKillRouterUnderLoad(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2", "--forward-timeout", "5s", "--shutdown-timeout", "25s")
	routers := c.routers()
	victim := routers[1]
	apps := c.children(victim)
	if len(apps) != 1 {
		t.Fatalf("router 1 (pid %d) has children %v, want one app", victim, apps)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				if _, err := c.getKey(client, "/", fmt.Sprintf("load-%d-%d", g, i%50)); err != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}(g)
	}
	if !Eventually(5*time.Second, func() bool { return ok.Load() > 100 }) {
		t.Fatalf("only %d requests answered (%d failed) in 5s before the kill", ok.Load(), failed.Load())
	}
	// Under load, the keep-alive pools on every leg are at their working size.
	masterFDs, survivorFDs := fds(c.Pid()), fds(routers[0])
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !Eventually(5*time.Second, func() bool { return len(alive(apps)) == 0 }) {
		t.Errorf("router 1's app %v outlived it", apps)
	}
	if !Eventually(20*time.Second, func() bool { r := c.routers(); return r[1] != 0 && r[1] != victim }) {
		t.Fatalf("no new router 1 after kill -9")
	}
	if !Eventually(20*time.Second, func() bool { _, err := c.getKey(quick, "/", keyOwnedBy(1, 2)); return err == nil }) {
		t.Fatalf("worker 1's keys do not answer after its router was replaced")
	}
	mark := ok.Load()
	if !Eventually(5*time.Second, func() bool { return ok.Load() > mark+100 }) {
		t.Fatalf("only %d requests answered in 5s once the new router served", ok.Load()-mark)
	}
	failedBefore := failed.Load()
	mark = ok.Load()
	if !Eventually(5*time.Second, func() bool { return ok.Load() > mark+200 }) {
		t.Errorf("only %d requests answered in the 5s checked for failures, want 200", ok.Load()-mark)
	}
	cancel()
	waitGroup(t, &wg, 30*time.Second, "the load's clients to end after their context was cancelled")
	if f := failed.Load() - failedBefore; f > 0 {
		t.Errorf("%d requests failed after the new router was serving", f)
	}
	t.Logf("%d requests answered, %d failed (around the kill)", ok.Load(), failed.Load())
	for name, p := range map[string][2]int{"master": {c.Pid(), masterFDs}, "router 0": {routers[0], survivorFDs}} {
		var n int
		if !Eventually(10*time.Second, func() bool { n = fds(p[0]); return n <= p[1]+4 }) {
			t.Errorf("%s: %d open descriptors, %d before the kill", name, n, p[1])
		}
	}
	// Starting the new router left the shared socket as it was: every router stops at once
	// (a router stuck in a blocking accept would hold the stop up to --shutdown-timeout).
	if err := c.Stop(15 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
}

// TestHostileSecretNeverShown: the secret appears in no output of a whole run, nor in any
// answer, however it is asked for.
func TestHostileSecretNeverShown(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	send := func(key, index, secret string) (int, string) {
		req, _ := http.NewRequest("GET", c.URL()+"/s", nil)
		if key != "" {
			req.Header.Set("X-Olio-Key", key)
		}
		if index != "" {
			req.Header.Set("X-Olio-Index", index)
		}
		if secret != "" {
			req.Header.Set("X-Olio-Secret", secret)
		}
		resp, err := quick.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var hdr strings.Builder
		resp.Header.Write(&hdr)
		if strings.Contains(string(body), c.Secret) || strings.Contains(hdr.String(), c.Secret) {
			t.Errorf("the secret is in an answer: %s\n%s", hdr.String(), body)
		}
		return resp.StatusCode, string(body)
	}
	for i := 0; i < 10; i++ {
		key := "user-" + strconv.Itoa(i)
		if code, body := send(key, "", ""); code != 200 {
			t.Errorf("key %s: %d %s", key, code, body)
		}
		if code, body := send(key, strconv.Itoa(i%2), c.Secret); code != 200 || (strings.Contains(body, "X-Olio-Index") || strings.Contains(body, "X-Olio-Secret")) {
			t.Errorf("direct to %d: %d %s", i%2, code, body)
		}
		if code, _ := send(key, "0", c.Secret+"x"); code != 403 {
			t.Errorf("wrong secret: %d, want 403", code)
		}
		if code, _ := send(key, "0", ""); code != 403 {
			t.Errorf("no secret: %d, want 403", code)
		}
		if code, _ := send("", "7", c.Secret); code != 400 {
			t.Errorf("index out of range: %d, want 400", code)
		}
	}
	// A malformed request and a huge one, whose errors net/http logs or answers itself.
	c.raw(t, "GET / HTTP/1.1\r\nHost: x\r\nX-Olio-Secret: "+c.Secret+"\r\nbroken\r\n\r\n")
	if err := c.Stop(20 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	if n := strings.Count(c.Out.String(), c.Secret); n != 0 {
		t.Errorf("the secret appears %d times in olio's output", n)
	}
}

// runDir is the private run directory the master logged.
func (c *Cluster) runDir(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`run_dir=("[^"]*"|\S+)`).FindStringSubmatch(c.Out.String())
	if m == nil {
		t.Fatalf("no run_dir in the log")
	}
	dir := m[1]
	if s, err := strconv.Unquote(dir); err == nil {
		dir = s
	}
	return dir
}

// TestHostileRunDirPermissions: the run directory is 0700 and every socket in it 0600.
func TestHostileRunDirPermissions(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	dir := c.runDir(t)
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if g, e := st.Mode().Perm(), os.FileMode(0o700); g != e {
		t.Errorf("run dir %s: mode %v, want %v", dir, g, e)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	sockets := 0
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || info.Mode().Type() != os.ModeSocket {
			continue
		}
		sockets++
		if g, e := info.Mode().Perm(), os.FileMode(0o600); g != e {
			t.Errorf("socket %s: mode %v, want %v", info.Name(), g, e)
		}
	}
	if sockets < 2 {
		t.Errorf("found %d sockets in %s, want at least one per router", sockets, dir)
	}
}

// TestHostileEnvironmentNotInherited: no router takes from the master, and no app from its
// router, a variable olio sets for its children itself (process.ScrubbedEnv): each is given to
// the master with a value of its own, and no child has that value.
func TestHostileEnvironmentNotInherited(t *testing.T) {
	t.Parallel()
	inherited := map[string]bool{}
	var env []string
	for _, name := range process.ScrubbedEnv() {
		kv := name + "=inherited-" + strings.ToLower(name)
		env = append(env, kv)
		inherited[kv] = true
	}
	c := StartEnv(t, env, "--workers", "2")
	routers, apps := 0, 0
	for _, pid := range c.Descendants() {
		env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if err != nil {
			continue // gone since
		}
		if parentPID(pid) == c.Pid() {
			routers++
		} else {
			apps++
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if inherited[kv] {
				t.Errorf("pid %d (a router or app) inherited %s", pid, kv)
			}
		}
	}
	if routers < 2 || apps < 2 {
		t.Fatalf("looked at %d routers and %d apps, want 2 of each: the test did not test anything", routers, apps)
	}
}

// TestHostileAppEnvironment: the app's environment is olio's plus only the documented
// variables.
func TestHostileAppEnvironment(t *testing.T) {
	t.Parallel()
	envFile := filepath.Join(t.TempDir(), "env")
	c := Start(t, append([]string{"--workers", "2", "--cluster-addr", "lb.example:80"}, hostileAppArgs(t, "-env", envFile)...)...)
	b, err := os.ReadFile("/proc/" + strconv.Itoa(c.Pid()) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	olio := map[string]bool{}
	for _, kv := range strings.Split(string(b), "\x00") {
		olio[kv] = true
	}
	allowed := map[string]bool{"PORT": true, "OLIO_INDEX": true, "OLIO_WORKERS": true, "OLIO_SECRET": true,
		"OLIO_ADDR": true, "OLIO_CLUSTER_ADDR": true, "NOTIFY_SOCKET": true}
	for i := 0; i < 2; i++ {
		b, err := os.ReadFile(envFile + "." + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, kv := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			k, v, _ := strings.Cut(kv, "=")
			got[k] = v
			if !olio[kv] && !allowed[k] {
				t.Errorf("app %d: %s is in its environment and not in olio's", i, kv)
			}
		}
		if got["OLIO_INDEX"] != strconv.Itoa(i) || got["OLIO_WORKERS"] != "2" || got["OLIO_SECRET"] != c.Secret ||
			got["OLIO_ADDR"] != c.Addr || got["OLIO_CLUSTER_ADDR"] != "lb.example:80" || got["PORT"] == "" {
			t.Errorf("app %d: documented variables missing or wrong: PORT=%q OLIO_INDEX=%q OLIO_WORKERS=%q OLIO_ADDR=%q OLIO_CLUSTER_ADDR=%q, OLIO_SECRET set: %v",
				i, got["PORT"], got["OLIO_INDEX"], got["OLIO_WORKERS"], got["OLIO_ADDR"], got["OLIO_CLUSTER_ADDR"], got["OLIO_SECRET"] == c.Secret)
		}
	}
}

// TestHostileAppSignalsDefault: the app starts with no signal ignored. An ignored signal
// stays ignored across exec, so a router that ignored HUP or INT would pass that on to its
// app, and a shell-script app could not even trap them.
func TestHostileAppSignalsDefault(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "sigign")
	script := `grep SigIgn /proc/self/status > "$0.$OLIO_INDEX" && exec "$1" demo`
	Start(t, "--workers", "2", "--", "/bin/sh", "-c", script, out, olioBin)
	for i := 0; i < 2; i++ {
		b, err := os.ReadFile(out + "." + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		field := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(b)), "SigIgn:"))
		mask, err := strconv.ParseUint(field, 16, 64)
		if err != nil {
			t.Fatalf("app %d: SigIgn %q: %v", i, b, err)
		}
		for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGPIPE, syscall.SIGTERM,
			syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGWINCH} {
			if mask&(1<<(uint(sig)-1)) != 0 {
				t.Errorf("app %d starts with %v ignored (SigIgn %s)", i, sig, field)
			}
		}
	}
}

// TestHostileKillMaster: kill -9 of the master takes every router and app with it.
func TestHostileKillMaster(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2")
	procs := c.Descendants()
	if len(procs) < 4 {
		t.Fatalf("descendants %v, want 2 routers and 2 apps", procs)
	}
	if err := syscall.Kill(c.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.WaitExit(10*time.Second, "kill -9 of the master")
	if !Eventually(10*time.Second, func() bool { return len(alive(procs)) == 0 }) {
		t.Errorf("orphans after kill -9 of the master: %v", alive(procs))
	}
}
