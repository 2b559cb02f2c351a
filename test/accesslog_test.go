package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/olio-dev/olio/router/process"
	"github.com/olio-dev/olio/test/harness"
)

// accessLog reads a JSON access log; a line that does not parse fails the test.
func accessLog(t *testing.T, path string) []process.AccessLine {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []process.AccessLine
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		var a process.AccessLine
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("access log line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, a)
	}
	return out
}

// accessLines waits until the access log at path has a line for each uri, and returns
// every line for them.
func accessLines(t *testing.T, path string, uris ...string) map[string][]process.AccessLine {
	t.Helper()
	var got map[string][]process.AccessLine
	ok := Eventually(10*time.Second, func() bool {
		got = map[string][]process.AccessLine{}
		for _, a := range accessLog(t, path) {
			got[a.URI] = append(got[a.URI], a)
		}
		for _, u := range uris {
			if len(got[u]) == 0 {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("the access log %s has no line for some of %q: %v", path, uris, got)
	}
	return got
}

// getOn sends a GET for uri with the given headers on cl and checks the status.
func getOn(t *testing.T, cl *http.Client, c *Cluster, uri string, hdr http.Header, want int) {
	t.Helper()
	req, _ := http.NewRequest("GET", c.URL()+uri, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	status, body, _ := rawDoOn(t, cl, req)
	if status != want {
		t.Fatalf("GET %s: status %d, want %d: %s", uri, status, want, body)
	}
}

func rawDoOn(t *testing.T, cl *http.Client, req *http.Request) (int, string, http.Header) {
	t.Helper()
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&sb)
	return resp.StatusCode, sb.String(), resp.Header
}

// One request per route appears once, on the router that answered the client, with the
// route and the worker jump hash makes the owner; a WebSocket gets one line when it closes;
// USR1 after a rename writes to a fresh file.
func TestAccessLog(t *testing.T) {
	t.Parallel()
	const workers = 2
	path := filepath.Join(t.TempDir(), "access.log")
	c := Start(t, "--workers", strconv.Itoa(workers), "--access-log", path, "--log-format", "json")
	on0, _ := pinnedClient(t, c, 0)
	k0, k1 := keyOwnedBy(0, workers), keyOwnedBy(1, workers)
	key := func(k string) http.Header { return http.Header{"X-Olio-Key": {k}} }

	getOn(t, on0, c, "/local?x=1", key(k0), 200)
	getOn(t, on0, c, "/forwarded", key(k1), 200)
	getOn(t, on0, c, "/direct", http.Header{"X-Olio-Index": {"1"}, "X-Olio-Secret": {c.Secret}}, 200)
	getOn(t, on0, c, "/fanout", http.Header{"X-Olio-Index": {"*"}, "X-Olio-Secret": {c.Secret}}, 200)
	getOn(t, on0, c, "/refused", http.Header{"X-Olio-Index": {"1"}, "X-Olio-Secret": {"wrong"}}, 403)

	// Handed off: a fresh connection whose first request router 1 owns; the kernel picks
	// the router that accepts it, so try until router 0 did (then router 1 answers).
	handed := ""
	for i := 0; i < 40 && handed == ""; i++ {
		uri := "/handed-" + strconv.Itoa(i)
		cl := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
		getOn(t, cl, c, uri, key(k1), 200)
		cl.CloseIdleConnections()
		a := accessLines(t, path, uri)[uri][0]
		switch a.Route {
		case process.RouteHandedOff:
			handed = uri
		case process.RouteLocal: // router 1 accepted it
		default:
			t.Fatalf("%s: route %q, want local or handed-off", uri, a.Route)
		}
		if a.Worker == nil || *a.Worker != 1 {
			t.Fatalf("%s: worker %v, want its owner 1", uri, a.Worker)
		}
	}
	if handed == "" {
		t.Fatal("router 0 accepted none of 40 connections: the test did not test a handoff")
	}

	got := accessLines(t, path, "/local?x=1", "/forwarded", "/direct", "/fanout", "/refused")
	for _, w := range []struct {
		uri    string
		status int
		route  string
		worker int // -1: none
		key    string
	}{
		{"/local?x=1", 200, process.RouteLocal, 0, k0},
		{"/forwarded", 200, process.RouteForwarded, 1, k1},
		{"/direct", 200, process.RouteDirect, 1, ""},
		{"/fanout", 200, process.RouteFanout, -1, ""},
		{"/refused", 403, process.RouteDirect, -1, ""},
		{handed, 200, process.RouteHandedOff, 1, k1},
	} {
		lines := got[w.uri]
		if w.uri == handed {
			lines = accessLines(t, path, handed)[handed]
		}
		if len(lines) != 1 {
			t.Errorf("%s: %d lines, want 1: %+v", w.uri, len(lines), lines)
			continue
		}
		a := lines[0]
		worker := -1
		if a.Worker != nil {
			worker = *a.Worker
		}
		key := ""
		if a.Key != nil {
			key = *a.Key
		}
		if a.Status != w.status || a.Route != w.route || worker != w.worker || key != w.key || a.Method != "GET" ||
			a.Client == "" || a.Duration <= 0 || (a.App != nil && *a.App > a.Duration) {
			t.Errorf("%s: %+v; want status %d, route %s, worker %d, key %q", w.uri, a, w.status, w.route, w.worker, w.key)
		}
		if w.status == 200 && w.route != process.RouteFanout && (a.App == nil || a.BytesOut == 0) {
			t.Errorf("%s: no app time or no bytes out: %+v", w.uri, a)
		}
	}
	if b, _ := os.ReadFile(path); strings.Contains(string(b), c.Secret) {
		t.Error("the secret is in the access log")
	}

	t.Run("WebSocketAtClose", func(t *testing.T) {
		nc, _ := pinnedConn(t, c, 0)
		d := websocket.Dialer{
			NetDialContext:   func(context.Context, string, string) (net.Conn, error) { return nc, nil },
			HandshakeTimeout: 10 * time.Second,
		}
		ws, _, err := d.Dial("ws://"+c.Addr+"/ws", key(k1))
		if err != nil {
			t.Fatal(err)
		}
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := ws.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		// A later request through router 0, logged after anything router 0 queued before.
		getOn(t, on0, c, "/marker", key(k0), 200)
		if n := len(accessLines(t, path, "/marker")["/ws"]); n != 0 {
			t.Fatalf("%d lines for the WebSocket while it is open; want its line at close", n)
		}
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		ws.Close()
		lines := accessLines(t, path, "/ws")["/ws"]
		a := lines[0]
		if len(lines) != 1 || a.Status != 101 || !a.Upgraded || a.Route != process.RouteForwarded || a.Worker == nil || *a.Worker != 1 {
			t.Errorf("WebSocket lines: %+v; want one, 101, upgraded, forwarded to 1", lines)
		}
	})

	t.Run("ReopenOnUSR1", func(t *testing.T) {
		rotated := path + ".1"
		if err := os.Rename(path, rotated); err != nil {
			t.Fatal(err)
		}
		before := c.CountLog("access logs reopened")
		c.Signal(syscall.SIGUSR1)
		if !Eventually(10*time.Second, func() bool { return c.CountLog("access logs reopened") > before }) {
			t.Fatalf("no reopen logged; output:\n%s", c.Out)
		}
		var uris []string
		for w := 0; w < workers; w++ {
			cl, _ := pinnedClient(t, c, w)
			uri := fmt.Sprintf("/after-rotate-%d", w)
			getOn(t, cl, c, uri, nil, 200)
			uris = append(uris, uri)
		}
		accessLines(t, path, uris...)
		for _, a := range accessLog(t, rotated) {
			if strings.HasPrefix(a.URI, "/after-rotate") {
				t.Errorf("%s went to the rotated file", a.URI)
			}
		}
	})
}

// --access-log - writes to olio's stdout, in the text form.
func TestAccessLogStdout(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "1", "--access-log", "-")
	getOn(t, client, c, "/on-stdout", http.Header{"X-Olio-Key": {"bob"}}, 200)
	c.WaitLog(`"GET /on-stdout HTTP/1.1" 200 0 `, 10*time.Second)
	if l := c.lines("/on-stdout"); len(l) != 1 || !strings.HasSuffix(l[0], ` "bob" 0 local`) {
		t.Errorf("stdout lines %q; want one ending in \"bob\" 0 local", l)
	}
}

// An embedded worker (router.Serve) logs as a router does, with the handler's time as the
// app's share, also for a request forwarded to it.
func TestAccessLogEmbedded(t *testing.T) {
	t.Parallel()
	const workers = 2
	path := filepath.Join(t.TempDir(), "access.log")
	c := Start(t, "--workers", strconv.Itoa(workers), "--embedded", "--access-log", path, "--log-format", "json", "--", exampleBin)
	on0, _ := pinnedClient(t, c, 0)
	k0, k1 := keyOwnedBy(0, workers), keyOwnedBy(1, workers)
	getOn(t, on0, c, "/e-local", http.Header{"X-Olio-Key": {k0}}, 200)
	getOn(t, on0, c, "/e-forwarded", http.Header{"X-Olio-Key": {k1}}, 200)
	got := accessLines(t, path, "/e-local", "/e-forwarded")
	for uri, w := range map[string]struct {
		route  string
		worker int
	}{"/e-local": {process.RouteLocal, 0}, "/e-forwarded": {process.RouteForwarded, 1}} {
		l := got[uri]
		if len(l) != 1 || l[0].Route != w.route || l[0].Worker == nil || *l[0].Worker != w.worker || l[0].App == nil || l[0].BytesOut == 0 {
			t.Errorf("%s: %+v; want one line, %s, worker %d, with the handler's time", uri, l, w.route, w.worker)
		}
	}
}

// startStdoutTo runs `olio serve` (through sh, whose exec keeps the pid) with its stdout on
// path and its stderr, the log, on c.Out; it waits until every worker is ready.
func startStdoutTo(t *testing.T, path string, args ...string) *Cluster {
	t.Helper()
	c := newCluster(t, freeAddr(t))
	full := append([]string{"serve", "--listen", c.Addr, "--control", c.Control, "--secret", c.Secret}, args...)
	cmd := exec.Command("sh", append([]string{"-c", `exec "$0" "$@" >"$OLIO_TEST_STDOUT"`, olioBin}, full...)...)
	cmd.Env = append(os.Environ(), "OLIO_TEST_STDOUT="+path)
	c.start(cmd, nil)
	c.WaitLog("all workers ready", 30*time.Second)
	return c
}

// A stdout nobody reads (a FIFO whose reader is stalled) and requests with 900 KB URIs:
// the router's queue is bounded in bytes (its long fields cut), so its memory stays
// bounded; lines past the bound are dropped and counted, and serving goes on.
func TestAccessLogStalledReaderBounded(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "stdout.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// The stalled reader: open, never read (closed once olio has stopped).
	stalled, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stalled.Close() })
	metrics := freeAddr(t)
	c := startStdoutTo(t, fifo, "--workers", "1", "--key", "query:k", "--access-log", "-", "--metrics", metrics)
	pid := c.routers()[0]
	if pid == 0 {
		t.Fatal("no router process found")
	}
	rss := func() uint64 {
		n, err := harness.ProcBytes(pid, "status", "VmRSS")
		if err != nil {
			t.Fatalf("router RSS: %v", err)
		}
		return n
	}
	before := rss()

	// Sends n GETs with URIs of size bytes, 4 at a time; each must get 200.
	send := func(n, size int, tag string) {
		pad := strings.Repeat("x", size)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		next := make(chan int, n)
		for i := 0; i < n; i++ {
			next <- i
		}
		close(next)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					resp, err := client.Get(fmt.Sprintf("%s/%s?k=%s-%d&pad=%s", c.URL(), tag, tag, i, pad))
					if err != nil {
						errs <- err
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						errs <- fmt.Errorf("%s %d: status %d", tag, i, resp.StatusCode)
						return
					}
				}
			}()
		}
		waitGroup(t, &wg, 60*time.Second, "the requests with the access log's reader stalled")
		close(errs)
		for err := range errs {
			t.Fatalf("with the access log's reader stalled: %v", err)
		}
	}
	const big, bigURI = 300, 900 << 10
	send(big, bigURI, "big")
	grown := int64(rss()) - int64(before)
	t.Logf("router RSS %d MiB before, grew by %d MiB after %d requests of %d KiB URIs", before>>20, grown>>20, big, bigURI>>10)
	// The bug this guards against grows by the whole queue (over 400 MiB here); a race-built
	// router takes about twice the memory of a plain one for the same bounded queue.
	limit := int64(100 << 20)
	if os.Getenv("OLIO_TEST_RACE") != "" {
		limit = 250 << 20
	}
	if grown > limit {
		t.Errorf("router RSS grew by %d MiB with the access log's reader stalled (%d requests of %d KiB URIs); want a bounded queue",
			grown>>20, big, bigURI>>10)
	}
	// Lines of 16 KiB URIs, each cut to a few KiB: enough of them to fill the byte bound.
	send(1500, 16<<10, "many")
	if !Eventually(10*time.Second, func() bool { return metric(t, metrics, "olio_access_log_dropped_total") > 0 }) {
		t.Errorf("olio_access_log_dropped_total stayed 0 after %d lines with nobody reading them", big+1500)
	}
	if a, err := c.getKey(quick, "/still", "k"); err != nil || a.Path != "/still" {
		t.Errorf("a request after the queue filled: %+v, %v", a, err)
	}
}

// An access log on a full filesystem (a small tmpfs, mounted by the test; root only):
// the failed writes are counted and logged, serving goes on, and once space is freed the
// log resumes by itself, without USR1.
func TestAccessLogDiskFull(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	mnt := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=1m,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs to fill: %v", err)
	}
	t.Cleanup(func() { // after olio has stopped (cleanups run last first)
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	path := filepath.Join(mnt, "access.log")
	metrics := freeAddr(t)
	c := Start(t, "--workers", "1", "--access-log", path, "--metrics", metrics)
	getOn(t, client, c, "/before-full", nil, 200)
	c.waitFile(t, path, "/before-full")

	// Fill the filesystem: big writes, then small ones, until none fits.
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []int{64 << 10, 512, 1} {
		for {
			if _, err := f.Write(make([]byte, chunk)); err != nil {
				break
			}
		}
	}
	f.Close()

	i := 0
	if !Eventually(15*time.Second, func() bool {
		i++
		getOn(t, client, c, fmt.Sprintf("/while-full-%d", i), nil, 200) // served all the same
		return c.CountLog("access log: write failed") > 0 && metric(t, metrics, "olio_access_log_dropped_total") > 0
	}) {
		t.Fatalf("after %d requests on a full disk: no write failure logged, or olio_access_log_dropped_total still %v",
			i, metric(t, metrics, "olio_access_log_dropped_total"))
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	i = 0
	if !Eventually(15*time.Second, func() bool {
		i++
		uri := fmt.Sprintf("/after-freed-%d", i)
		getOn(t, client, c, uri, nil, 200)
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), `"GET /after-freed-`)
	}) {
		t.Fatalf("after space was freed, %d requests and no line in the access log", i)
	}
	c.WaitLog("access log: writing again", 10*time.Second)
	if n := c.CountLog("access log: write failed"); n > 3 {
		t.Errorf("%d write failures logged in a few seconds; want them rate-limited", n)
	}
}

// waitFile waits until the file at path holds s.
func (c *Cluster) waitFile(t *testing.T, path, s string) {
	t.Helper()
	if !Eventually(10*time.Second, func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), s)
	}) {
		b, _ := os.ReadFile(path)
		t.Fatalf("%s has no %q within 10s: %q", path, s, b)
	}
}
