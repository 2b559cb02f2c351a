package test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The second round of hostile clients and apps: slow bodies, apps that are
// never ready, framing that must close the connection, error answers that say too much.

// TestHostileBadGatewayPlain: a 502 tells the client a plain line; the detail (addresses,
// syscalls) goes to the log only.
func TestHostileBadGatewayPlain(t *testing.T) {
	t.Parallel()
	c, _ := hostileStart(t, 2, "--handoff=false")
	internal := regexp.MustCompile(`\d+\.\d+\.\d+\.\d+|tcp|reset|EOF|read|write`)
	for i := 0; i < 2; i++ {
		for try := 0; try < 3; try++ { // accepted by either router: local and forwarded
			req, _ := http.NewRequest("POST", c.URL()+"/reset", strings.NewReader("body"))
			req.Header.Set("X-Olio-Key", keyOwnedBy(i, 2))
			resp, err := quick.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("worker %d: status %d %q, want 502", i, resp.StatusCode, body)
			}
			if m := internal.Find(body); m != nil {
				t.Errorf("worker %d: the 502 body %q shows %q", i, body, m)
			}
		}
	}
	if c.CountLog("app failed") == 0 {
		t.Errorf("the detail of the failures is not in the log")
	}
}

// TestHostileNeverReadyAnswers503: an app that is never ready (it exits at once, or never
// listens on $PORT) leaves its router accepting: requests get 503 with Retry-After after
// --forward-timeout instead of waiting unanswered in the backlog, and the router says once
// why its app is not ready.
//
// Not in parallel: it bounds how long the 503 takes.
func TestHostileNeverReadyAnswers503(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		hint string
	}{
		{"exits at once", []string{"--", "/bin/true"}, "exited before it accepted connections on $PORT"},
		{"ignores PORT", []string{"--ready-timeout", "500ms", "--", "/bin/sh", "-c", "exec sleep 1000"}, "does it listen on $PORT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := StartNoWait(t, append([]string{"--workers", "2", "--forward-timeout", "1s"}, tc.args...)...)
			if !Eventually(20*time.Second, func() bool { return len(c.routers()) == 2 }) {
				t.Fatalf("the routers did not start")
			}
			cl := &http.Client{Timeout: 8 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			for i := 0; i < 2; i++ {
				req, _ := http.NewRequest("GET", c.URL()+"/", nil)
				req.Header.Set("X-Olio-Key", keyOwnedBy(i, 2))
				start := time.Now()
				resp, err := cl.Do(req)
				if err != nil {
					t.Fatalf("worker %d's key: no answer: %v", i, err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
					t.Errorf("worker %d's key: status %d, Retry-After %q; want 503 with Retry-After",
						i, resp.StatusCode, resp.Header.Get("Retry-After"))
				}
				if took := time.Since(start); took < 900*time.Millisecond || took > 6*time.Second {
					t.Errorf("worker %d's key: answered after %s, want about --forward-timeout (1s)", i, took)
				}
			}
			const failed = `msg="not ready, stopping"`
			if !Eventually(30*time.Second, func() bool { return c.CountLog(failed) >= 6 }) {
				t.Fatalf("fewer than 6 failed starts in 30s")
			}
			if g := c.CountLog(tc.hint); g != 2 {
				t.Errorf("%d log lines say %q after %d failed starts of 2 workers, want one per worker",
					g, tc.hint, c.CountLog(failed))
			}
		})
	}
}

// metric is the sum across workers of one metric family, 0 when it is absent.
func metric(t *testing.T, addr, name string) float64 {
	t.Helper()
	mf := opScrape(t, addr)[name]
	if mf == nil {
		return 0
	}
	return opSum(mf)
}

// TestHostileSlowBody: clients that send a body a byte at a time hold their --max-conns
// slots no longer than --body-timeout: each gets 408 and its connection closed, the
// timeouts are counted, and other clients are served meanwhile. A body that comes at a
// sane rate is not cut.
func TestHostileSlowBody(t *testing.T) {
	t.Parallel()
	metrics := freeAddr(t)
	c := Start(t, "--workers", "2", "--max-conns", "3", "--header-timeout", "2s", "--body-timeout", "1s",
		"--metrics", metrics)
	const slow = 6 // fills both routers
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); waitGroup(t, &wg, 30*time.Second, "the slow senders to end") }()
	conns := make([]net.Conn, slow)
	for i := range conns {
		conn := c.dialWrite(t, "POST /upload HTTP/1.1\r\nHost: x\r\nX-Olio-Key: "+keyOwnedBy(i%2, 2)+"\r\nContent-Length: 1000000000\r\n\r\n")
		conns[i] = conn
		wg.Add(1)
		go func() { // a byte every 200ms, for 15s at most
			defer wg.Done()
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for end := time.Now().Add(15 * time.Second); time.Now().Before(end); {
				select {
				case <-stop:
					return
				case <-t.C:
				}
				if _, err := conn.Write([]byte("x")); err != nil {
					return
				}
			}
		}()
	}
	for i, conn := range conns {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("slow body %d: no answer within 10s with --body-timeout 1s: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
			t.Errorf("slow body %d: status %d, close %v; want 408 and the connection closed", i, resp.StatusCode, resp.Close)
		}
	}
	// The slots are free again: another client is served at once.
	if a, err := c.getKey(quick, "/", "after"); err != nil || a.Index != Owner("after", 2) {
		t.Errorf("a client after the slow bodies: %+v, %v", a, err)
	}
	if g := metric(t, metrics, "olio_body_timeouts_total"); g != slow {
		t.Errorf("olio_body_timeouts_total %v, want %d", g, slow)
	}
	// A large body sent at once is not cut by the 1s bound.
	req, _ := http.NewRequest("POST", c.URL()+"/upload", bytes.NewReader(make([]byte, 4<<20)))
	req.Header.Set("X-Olio-Key", "big")
	if a, err := Do(quick, req); err != nil || a.BodyBytes != 4<<20 {
		t.Errorf("a 4 MiB body: %+v, %v", a, err)
	}
}

// TestHostileClientNotReading: a client that asks for a large answer and never reads it
// holds its slot no longer than --body-timeout: the write times out, the connection is
// closed and counted, and the next client is served.
func TestHostileClientNotReading(t *testing.T) {
	t.Parallel()
	metrics := freeAddr(t)
	c, _ := hostileStart(t, 1, "--max-conns", "1", "--body-timeout", "1s", "--metrics", metrics)
	stalled := c.dialWrite(t, "GET /big?bytes=268435456 HTTP/1.1\r\nHost: x\r\n\r\n")
	if !Eventually(15*time.Second, func() bool { return metric(t, metrics, "olio_write_timeouts_total") == 1 }) {
		t.Fatalf("no write timeout counted 15s after a client stopped reading, with --body-timeout 1s")
	}
	if a, err := c.getKey(quick, "/", "next"); err != nil || a.Index != 0 {
		t.Errorf("the next client, with --max-conns 1: %+v, %v", a, err)
	}
	stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, stalled)
	if ne, ok := err.(net.Error); ok && ne.Timeout() || n >= 256<<20 {
		t.Errorf("the stalled client's connection: %d bytes, %v; want it closed before the end", n, err)
	}
}

// TestHostileAmbiguousFramingCloses: a request with both Content-Length and
// Transfer-Encoding (HTTP/1.1), or Transfer-Encoding in HTTP/1.0, is answered and its
// connection closed (RFC 9112 §6.1), whether its owner is the router that accepted it or a
// peer: the request after it on the same connection is never read. A plain chunked request
// keeps its connection.
func TestHostileAmbiguousFramingCloses(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "2", "--handoff=false")
	for _, tc := range []struct {
		name, head, body string
		closes           bool
	}{
		{"HTTP/1.1 CL+TE", "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n", true},
		{"HTTP/1.1 TE+CL", "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 15\r\n", "5\r\nhello\r\n0\r\n\r\n", true},
		{"HTTP/1.0 keep-alive CL+TE", "POST /first HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n", "hello", true},
		{"HTTP/1.1 chunked", "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n", false},
	} {
		for i := 0; i < 2; i++ {
			for try := 0; try < 3; try++ { // accepted by either router
				key := keyOwnedBy(i, 2)
				conn := c.dialWrite(t, tc.head+"X-Olio-Key: "+key+"\r\n\r\n"+tc.body+
					"GET /second HTTP/1.1\r\nHost: x\r\nX-Olio-Key: "+key+"\r\n\r\n")
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(conn)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("%s, worker %d: %v", tc.name, i, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("%s, worker %d: status %d, want 200", tc.name, i, resp.StatusCode)
				}
				second, err := http.ReadResponse(br, nil)
				if err == nil {
					second.Body.Close()
				}
				if tc.closes && (err == nil || !resp.Close) {
					t.Errorf("%s, worker %d: the connection stayed open (Connection: close %v, the next request answered %v)",
						tc.name, i, resp.Close, err == nil)
				}
				if !tc.closes && err != nil {
					t.Errorf("%s, worker %d: the next request on the connection: %v", tc.name, i, err)
				}
				conn.Close()
			}
		}
	}
}

// TestHostileSecretFlagWarns: a secret given with --secret is in olio's command line, which
// every local user can read: olio says so, once. Given in $OLIO_SECRET it says nothing.
func TestHostileSecretFlagWarns(t *testing.T) {
	t.Parallel()
	const warning = "every local user can read it"
	c := Start(t, "--workers", "1") // the harness gives --secret
	if g := c.CountLog(warning); g != 1 {
		t.Errorf("%d warnings about --secret, want 1", g)
	}
	if strings.Contains(c.Out.String(), c.Secret+" ") || c.CountLog(c.Secret) != 0 {
		t.Errorf("the warning shows the secret")
	}

	fromEnv := newCluster(t, freeAddr(t))
	cmd := exec.Command(olioBin, "serve", "--workers", "1", "--listen", fromEnv.Addr, "--control", fromEnv.Control)
	cmd.Env = append(os.Environ(), "OLIO_SECRET=from-the-environment")
	fromEnv.start(cmd, nil)
	fromEnv.WaitLog("all workers ready", 20*time.Second)
	if err := fromEnv.Stop(30 * time.Second); err != nil {
		t.Errorf("olio with $OLIO_SECRET exited with %v after SIGTERM, want 0", err)
	}
	if strings.Contains(fromEnv.Out.String(), warning) {
		t.Errorf("a warning about --secret with the secret in $OLIO_SECRET:\n%s", fromEnv.Out)
	}
}

// TestHostileReloadErrorOnce: a reload refused for a bad config file says so once:
// "olio reload: config file …", not "olio reload: reload: …".
func TestHostileReloadErrorOnce(t *testing.T) {
	t.Parallel()
	cfgPath, write := configFile(t, `{"workers": 1}`)
	c := Start(t, "--config", cfgPath)
	write(`{"workers": `)
	out, err := opCLI(t, "reload", "--control", c.Control)
	if err == nil {
		t.Fatalf("olio reload with a broken config file succeeded: %s", out)
	}
	if !strings.HasPrefix(out, "olio reload: ") || strings.Count(out, "reload:") != 1 || !strings.Contains(out, cfgPath) {
		t.Errorf("olio reload said %q; want one line, prefixed once with \"olio reload: \", naming the file", out)
	}
}

// TestHostileWebSocketsCountedApart: WebSocket sessions are upgraded connections, not
// requests: counted in olio_upgraded_connections_total and _open, and kept out of
// olio_requests_served_total and the request duration histogram.
func TestHostileWebSocketsCountedApart(t *testing.T) {
	t.Parallel()
	metrics := freeAddr(t)
	c := Start(t, "--workers", "2", "--metrics", metrics)
	var conns []*websocket.Conn
	for i := 0; i < 3; i++ {
		hdr := http.Header{"X-Olio-Key": {keyOwnedBy(i%2, 2)}}
		ws, resp, err := websocket.DefaultDialer.Dial("ws://"+c.Addr+"/ws", hdr)
		if err != nil {
			t.Fatalf("websocket %d: %v", i, err)
		}
		resp.Body.Close()
		defer ws.Close()
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := ws.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, m, err := ws.ReadMessage(); err != nil || string(m) != "hi" {
			t.Fatalf("websocket %d echo: %q, %v", i, m, err)
		}
		conns = append(conns, ws)
	}
	for i := 0; i < 2; i++ {
		if _, err := c.getKey(quick, "/", keyOwnedBy(i, 2)); err != nil {
			t.Fatal(err)
		}
	}
	if g := metric(t, metrics, "olio_upgraded_connections_open"); g != 3 {
		t.Errorf("olio_upgraded_connections_open %v with 3 WebSockets open, want 3", g)
	}
	for _, ws := range conns {
		ws.Close()
	}
	if !Eventually(10*time.Second, func() bool { return metric(t, metrics, "olio_upgraded_connections_open") == 0 }) {
		t.Errorf("olio_upgraded_connections_open still %v after the WebSockets closed", metric(t, metrics, "olio_upgraded_connections_open"))
	}
	if g := metric(t, metrics, "olio_upgraded_connections_total"); g != 3 {
		t.Errorf("olio_upgraded_connections_total %v, want 3", g)
	}
	if g := metric(t, metrics, "olio_requests_served_total"); g != 2 {
		t.Errorf("olio_requests_served_total %v after 2 requests and 3 WebSockets, want 2", g)
	}
	if g := metric(t, metrics, "olio_request_duration_seconds"); g != 2 {
		t.Errorf("olio_request_duration_seconds counts %v, want the 2 requests", g)
	}
}

// TestHostileHeaderLimitExact: --max-header-bytes is one limit, to the byte, enforced by the
// router and the same for every key: a header (request line to the empty line) of exactly
// the limit is served, one byte more gets 431, first on a connection or pipelined after
// another request.
func TestHostileHeaderLimitExact(t *testing.T) {
	t.Parallel()
	c, _ := hostileStart(t, 2)
	const limit = 1 << 20
	request := func(key string, size int) string {
		head := "GET /h HTTP/1.1\r\nHost: x\r\nX-Olio-Key: " + key + "\r\nX-Big: "
		return head + strings.Repeat("b", size-len(head)-4) + "\r\n\r\n"
	}
	for i := 0; i < 2; i++ {
		key := keyOwnedBy(i, 2)
		for _, tc := range []struct {
			size, status int
		}{{limit, 200}, {limit + 1, 431}, {limit + 4000, 431}} {
			req := request(key, tc.size)
			if len(req) != tc.size {
				t.Fatalf("built %d bytes, want %d", len(req), tc.size)
			}
			for _, pipelined := range []bool{false, true} {
				raw := req
				if pipelined {
					raw = "GET /first HTTP/1.1\r\nHost: x\r\nX-Olio-Key: " + key + "\r\n\r\n" + req
				}
				conn, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				go io.WriteString(conn, raw)
				br := bufio.NewReader(conn)
				if pipelined {
					if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
						t.Fatalf("worker %d: the request before: %v, %v", i, resp, err)
					} else {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("worker %d, %d-byte header (pipelined %v): %v", i, tc.size, pipelined, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				conn.Close()
				if resp.StatusCode != tc.status {
					t.Errorf("worker %d, %d-byte header (pipelined %v): status %d, want %d", i, tc.size, pipelined, resp.StatusCode, tc.status)
				}
			}
		}
	}
}

// TestHostileFlagsAfterArguments: the control commands take their flags after their
// arguments too, as kubectl, docker and systemctl do.
func TestHostileFlagsAfterArguments(t *testing.T) {
	t.Parallel()
	c := Start(t, "--workers", "1")
	if out, err := opCLI(t, "scale", "2", "--control", c.Control, "--timeout", "2m"); err != nil {
		t.Fatalf("olio scale 2 --control PATH: %v\n%s", err, out)
	}
	out, err := opCLI(t, "status", "--json", "--control", c.Control)
	if err != nil || !strings.Contains(out, `"members": 2`) {
		t.Errorf("olio status --json --control PATH after the scale: %v\n%s", err, out)
	}
}

// TestHostileAppStopsListening: an app that closes its listening socket and keeps running
// is recycled, with the health probe off (the default): its port refusing connections is
// enough, and its keys are served by a new instance.
func TestHostileAppStopsListening(t *testing.T) {
	t.Parallel()
	c, _ := hostileStart(t, 1)
	a, err := c.getKey(quick, "/", "k")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := quick.Get(c.URL() + "/unlisten")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !Eventually(30*time.Second, func() bool {
		b, err := c.getKey(quick, "/", "k")
		return err == nil && b.PID != a.PID
	}) {
		t.Fatalf("the app %d that stopped listening was not replaced in 30s", a.PID)
	}
	c.WaitLog("app stopped listening on $PORT", 5*time.Second)
	if !Eventually(10*time.Second, func() bool { return len(alive([]int{a.PID})) == 0 }) {
		t.Errorf("the app %d that stopped listening is still there", a.PID)
	}
}

// TestHostileRollingRestartDrainsSideBySide: open WebSockets do not serialise a rolling
// restart. Each worker's restart goes on as soon as its new app is ready; the old apps
// drain side by side, shown as draining, each cut at --shutdown-timeout with a log line
// that counts what it cut; olio reload returns once every worker runs the new app and says
// how many old ones still drain. It runs under --handover overlap: under exclusive (the
// default) a reload ends the upgraded connections of each old app after --upgrade-grace
// instead (TestWSExclusiveScaleUp), so nothing would be left to drain.
//
// Not in parallel: it bounds how long the reload takes.
func TestHostileRollingRestartDrainsSideBySide(t *testing.T) {
	const workers = 3
	c := Start(t, "--workers", strconv.Itoa(workers), "--shutdown-timeout", "3s", "--handover", "overlap")
	before := opAppPIDs(opStatus(t, c))
	var conns []*websocket.Conn
	for i := 0; i < workers; i++ {
		ws, resp, err := websocket.DefaultDialer.Dial("ws://"+c.Addr+"/ws", http.Header{"X-Olio-Key": {keyOwnedBy(i, workers)}})
		if err != nil {
			t.Fatalf("websocket to worker %d: %v", i, err)
		}
		resp.Body.Close()
		defer ws.Close()
		conns = append(conns, ws)
	}
	start := time.Now()
	out, err := opCLI(t, "reload", "--control", c.Control)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("olio reload: %v\n%s", err, out)
	}
	t.Logf("olio reload with %d WebSockets open took %s: %s", workers, took, strings.TrimSpace(out))
	if took > 2500*time.Millisecond {
		t.Errorf("olio reload took %s with one WebSocket per worker; want less than one --shutdown-timeout (3s): the drains ran one after another", took)
	}
	if !strings.Contains(out, "3 old app instances still draining") {
		t.Errorf("olio reload said %q; want it to say that 3 old app instances are still draining", out)
	}
	st := opStatus(t, c)
	draining := 0
	for i, w := range st.Workers {
		draining += w.Draining
		if w.AppPID == before[i] {
			t.Errorf("worker %d still runs app %d after the reload", i, w.AppPID)
		}
	}
	if time.Since(start) < 2500*time.Millisecond && draining != workers {
		t.Errorf("status right after the reload: %d draining, want %d", draining, workers)
	}
	// Each old app is cut at --shutdown-timeout: a log line counts the connection it had, and
	// the app's SIGTERM closes its WebSocket.
	if !Eventually(15*time.Second, func() bool { return c.CountLog("drain ended by --shutdown-timeout") == workers }) {
		t.Fatalf("%d drains logged as ended by --shutdown-timeout, want %d", c.CountLog("drain ended by --shutdown-timeout"), workers)
	}
	for _, line := range c.lines("drain ended by --shutdown-timeout") {
		if !strings.Contains(line, "connections=1") {
			t.Errorf("a cut drain's line does not count its one connection: %s", line)
		}
	}
	for i, ws := range conns {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := ws.ReadMessage(); err == nil {
			t.Errorf("websocket %d still open after its old app was stopped", i)
		}
	}
	if !Eventually(10*time.Second, func() bool {
		n := 0
		for _, w := range opStatus(t, c).Workers {
			n += w.Draining
		}
		return n == 0
	}) {
		t.Errorf("old apps still shown draining after their drains ended")
	}
	if !Eventually(10*time.Second, func() bool { return len(alive(before)) == 0 }) {
		t.Errorf("old apps %v still running", alive(before))
	}
}
