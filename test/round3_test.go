package test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Tests that tell apart, by what a client sees, bugs a mutation round placed on the peer
// leg and the app leg: a broken answer that looks complete, a query that crashes the
// handler, a tunnel its owner ended that stays open, a stream held back. Each runs local
// (the accepting router's own app) and forwarded (over the peer leg, --handoff=false).

// round3AppArg, as the test binary's first argument, makes it run round3App.
const round3AppArg = "olio-round3-app"

func init() {
	if len(os.Args) > 1 && os.Args[1] == round3AppArg {
		os.Exit(round3App())
	}
}

// round3App serves on $PORT like the demo app (the same JSON answer, with the raw query in
// the header X-Round3-Query), and also:
//
//	/cut          streams a line, then breaks the connection off mid-body (no last chunk)
//	/die          streams a line, then exits 3 (the router starts a new app)
//	/sse?hold=N   an event stream: one event at once, the last one after /release?hold=N
//	/release?hold=N  ends the /sse held under N (answers 200 once it is released)
//	/upgrade      switches to protocol "round3", echoes one line, then closes the connection
//	/ws           a WebSocket that sends one message, then a close frame, then closes
//	?gate=FILE    (any other path) answers once FILE exists (bounded: 60s)
func round3App() int {
	index, _ := strconv.Atoi(os.Getenv("OLIO_INDEX"))
	var mu sync.Mutex
	holds := map[string]chan struct{}{}
	hold := func(name string) chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		ch, ok := holds[name]
		if !ok {
			ch = make(chan struct{})
			holds[name] = ch
		}
		return ch
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/cut", "/die":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "the first line of a longer answer\n")
			http.NewResponseController(w).Flush()
			if r.URL.Path == "/die" {
				os.Exit(3)
			}
			panic(http.ErrAbortHandler) // net/http cuts the connection: no last chunk
		case "/sse":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: first\n\n")
			http.NewResponseController(w).Flush()
			select {
			case <-hold(r.URL.Query().Get("hold")):
			case <-r.Context().Done():
				return
			case <-time.After(60 * time.Second): // a bound, so that no test leaves it behind
			}
			io.WriteString(w, "data: last\n\n")
			return
		case "/release":
			mu.Lock()
			ch := holds[r.URL.Query().Get("hold")]
			if ch != nil {
				delete(holds, r.URL.Query().Get("hold"))
			}
			mu.Unlock()
			if ch == nil {
				http.Error(w, "nothing held under that name", http.StatusNotFound)
				return
			}
			close(ch)
			return
		case "/upgrade":
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: round3\r\n\r\n")
			brw.Flush()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			line, _ := brw.ReadString('\n')
			brw.WriteString("echo: " + line)
			brw.Flush()
			return // the app ends the tunnel
		case "/ws":
			up := websocket.Upgrader{}
			ws, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer ws.Close()
			ws.WriteMessage(websocket.TextMessage, []byte("hello"))
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "the app is done"), time.Now().Add(5*time.Second))
			return // closed without waiting for the client's close frame
		}
		if gate := r.URL.Query().Get("gate"); gate != "" {
			tick := time.NewTicker(10 * time.Millisecond) // the app polls; the test waits on the answer
			defer tick.Stop()
			for end := time.Now().Add(60 * time.Second); time.Now().Before(end); {
				if _, err := os.Stat(gate); err == nil {
					break
				}
				select {
				case <-tick.C:
				case <-r.Context().Done():
					return
				}
			}
		}
		headers := map[string]string{"X-Round3-Query": r.URL.RawQuery}
		for k, v := range r.Header {
			headers[k] = v[0]
		}
		b, _ := json.Marshal(Answer{Index: index, PID: os.Getpid(), Method: r.Method, Path: r.URL.Path, Headers: headers, BodyBytes: n})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	})
	return serveApp(h, nil)
}

// round3Start starts n workers of round3App with --handoff=false, so that a keyed request
// on a connection one router accepted is forwarded to its owner rather than handed off.
func round3Start(t *testing.T, n int, flags ...string) *Cluster {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--workers", strconv.Itoa(n), "--handoff=false"}, flags...)
	return Start(t, append(args, "--", exe, round3AppArg)...)
}

// legs is every way a request travels in a two-worker cluster: accepted by router from,
// served by worker to's app (local when they are the same, forwarded otherwise).
var legs = []struct {
	name     string
	from, to int
}{{"local", 0, 0}, {"forwarded", 0, 1}, {"local", 1, 1}, {"forwarded", 1, 0}}

// sendOn writes a keyed GET of uri for worker to on nc, with extra header lines, and reads
// the answer's head, bounded by d.
func sendOn(t *testing.T, nc net.Conn, br *bufio.Reader, uri string, to int, extra string, d time.Duration) *http.Response {
	t.Helper()
	return sendMethodOn(t, nc, br, "GET", uri, to, extra, d)
}

// sendMethodOn is sendOn for any method; a POST carries a one-byte body.
func sendMethodOn(t *testing.T, nc net.Conn, br *bufio.Reader, method, uri string, to int, extra string, d time.Duration) *http.Response {
	t.Helper()
	nc.SetDeadline(time.Now().Add(d))
	body := ""
	if method == "POST" {
		extra, body = extra+"Content-Length: 1\r\n", "x"
	}
	fmt.Fprintf(nc, "%s %s HTTP/1.1\r\nHost: round3\r\nX-Olio-Key: %s\r\n%s\r\n%s", method, uri, keyOwnedBy(to, 2), extra, body)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s %s for worker %d: no answer (the connection ended, or %s passed): %v", method, uri, to, d, err)
	}
	return resp
}

// TestRound3CutAnswerIsAnError: an app that breaks its streamed (chunked) answer off mid-body,
// by cutting its connection or by dying, must never give the client a short answer that
// ends cleanly: the client sees the body end in an error, local and forwarded.
func TestRound3CutAnswerIsAnError(t *testing.T) {
	t.Parallel()
	c := round3Start(t, 2)
	for _, path := range []string{"/cut", "/die"} {
		for _, method := range []string{"GET", "POST"} { // the app leg's fast path, ReverseProxy
			for _, leg := range legs {
				t.Run(fmt.Sprintf("%s %s %s %d-%d", method, path[1:], leg.name, leg.from, leg.to), func(t *testing.T) {
					nc, _ := pinnedConn(t, c, leg.from)
					br := bufio.NewReader(nc)
					resp := sendMethodOn(t, nc, br, method, path, leg.to, "", 30*time.Second)
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("%s %s: status %d, want 200 and a broken body", method, path, resp.StatusCode)
					}
					b, err := io.ReadAll(resp.Body)
					var ne net.Error
					switch {
					case errors.As(err, &ne) && ne.Timeout():
						t.Fatalf("%s %s: the client waited 30s for the rest of a body the app broke off (read %q)", method, path, b)
					case err == nil:
						t.Fatalf("%s %s: the client read %q to a clean end; an answer the app broke off must end in an error", method, path, b)
					case !strings.HasPrefix(string(b), "the first line"):
						t.Errorf("%s %s: the client read %q before the error %v, want the line the app sent first", method, path, b, err)
					}
				})
			}
		}
	}
	// Every app answers afterwards (those that died were replaced).
	for i := 0; i < 2; i++ {
		if a, err := c.getKey(client, "/", keyOwnedBy(i, 2)); err != nil || a.Index != i {
			t.Errorf("worker %d after the broken answers: %+v, %v", i, a, err)
		}
	}
}

// TestRound3CutShortEscape: a query ending in a cut-short escape ("%4", "%") or holding a bad
// one is answered, local and forwarded, and the app sees the same query either way.
func TestRound3CutShortEscape(t *testing.T) {
	t.Parallel()
	c := round3Start(t, 2)
	queries := []string{"q=%4", "q=%", "%", "q=%zz&r=1", "q=a%4", "q=%41%4", "a;b=1"}
	seen := map[string]map[string]string{} // query → leg → what the app saw
	for _, leg := range legs {
		nc, _ := pinnedConn(t, c, leg.from)
		br := bufio.NewReader(nc)
		for _, q := range queries {
			resp := sendOn(t, nc, br, "/echo?"+q, leg.to, "", 20*time.Second)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("GET /echo?%s %s %d→%d: body: %v", q, leg.name, leg.from, leg.to, err)
			}
			a, err := decodeAnswer(resp.StatusCode, body)
			if err != nil || a.Index != leg.to {
				t.Fatalf("GET /echo?%s %s %d→%d: %+v, %v; want worker %d's answer", q, leg.name, leg.from, leg.to, a, err, leg.to)
			}
			if seen[q] == nil {
				seen[q] = map[string]string{}
			}
			seen[q][leg.name] = a.Headers["X-Round3-Query"]
		}
	}
	for _, q := range queries {
		if seen[q]["local"] != seen[q]["forwarded"] {
			t.Errorf("query %q: the app saw %q served local and %q forwarded, want the same", q, seen[q]["local"], seen[q]["forwarded"])
		}
	}
}

// TestRound3StreamNotHeldBack: an event stream's first event reaches the client while the app
// still holds the rest (until the test releases it), local and forwarded: nothing on the way
// waits for a buffer to fill.
func TestRound3StreamNotHeldBack(t *testing.T) {
	t.Parallel()
	c := round3Start(t, 2)
	const perRead = 10 * time.Second
	for n, leg := range legs {
		t.Run(fmt.Sprintf("%s %d-%d", leg.name, leg.from, leg.to), func(t *testing.T) {
			nc, _ := pinnedConn(t, c, leg.from)
			br := bufio.NewReader(nc)
			hold := "h" + strconv.Itoa(n)
			nc.SetDeadline(time.Now().Add(perRead))
			fmt.Fprintf(nc, "GET /sse?hold=%s HTTP/1.1\r\nHost: round3\r\nX-Olio-Key: %s\r\n\r\n", hold, keyOwnedBy(leg.to, 2))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("the head of an event stream did not reach the client within %s while the app held the rest "+
					"(a streamed answer is held back on the way): %v", perRead, err)
			}
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
				t.Fatalf("status %d, Content-Type %q; want 200 and an event stream", resp.StatusCode, ct)
			}
			events := bufio.NewReader(resp.Body)
			nc.SetReadDeadline(time.Now().Add(perRead))
			if line, err := events.ReadString('\n'); err != nil || line != "data: first\n" {
				t.Fatalf("the first event did not reach the client within %s while the app held the rest "+
					"(a streamed answer is held back on the way): read %q, %v", perRead, line, err)
			}
			events.ReadString('\n') // the event's blank line
			// The rest comes once the app is released.
			release := keyRequest(c, "GET", keyOwnedBy(leg.to, 2), nil)
			release.URL.Path, release.URL.RawQuery = "/release", "hold="+hold
			if code, body, _ := rawDo(t, release); code != http.StatusOK {
				t.Fatalf("releasing the held stream: %d %s", code, body)
			}
			nc.SetReadDeadline(time.Now().Add(perRead))
			rest, err := io.ReadAll(events)
			if err != nil || string(rest) != "data: last\n\n" {
				t.Fatalf("after the release: read %q, %v; want the last event and a clean end within %s", rest, err, perRead)
			}
		})
	}
}

// TestRound3TunnelEndedByApp: when the app ends an upgraded connection (a WebSocket, or
// another protocol), the client's connection ends too, local and forwarded: it reads EOF
// within a deadline, and no router keeps a goroutine or a file descriptor for it.
func TestRound3TunnelEndedByApp(t *testing.T) {
	t.Parallel()
	c := round3Start(t, 2)
	const wait = 15 * time.Second
	type conn struct {
		nc  net.Conn
		leg string
	}
	var ends []conn
	defer func() {
		for _, e := range ends {
			e.nc.Close()
		}
	}()
	// Every connection first, then the baseline: each router's goroutines and fds with
	// its pinned connections open and idle.
	type tunnel struct {
		nc   net.Conn
		from int
		to   int
		name string
		ws   bool
	}
	var tunnels []tunnel
	for _, ws := range []bool{false, true} {
		for _, leg := range legs {
			nc, _ := pinnedConn(t, c, leg.from)
			// A request on the same leg first, so that the baseline counts what any request
			// leaves open for the next (the session to the peer, pooled connections).
			resp := sendOn(t, nc, bufio.NewReader(nc), "/echo", leg.to, "", wait)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /echo %s %d→%d: status %d", leg.name, leg.from, leg.to, resp.StatusCode)
			}
			tunnels = append(tunnels, tunnel{nc: nc, from: leg.from, to: leg.to, name: leg.name, ws: ws})
		}
	}
	base := opStatus(t, c)
	baseFDs := make([]int, len(base.Workers)) // counted in /proc, not by the router itself
	for i, w := range base.Workers {
		baseFDs[i] = fds(w.RouterPID)
	}
	for _, tn := range tunnels {
		what := fmt.Sprintf("upgrade %s %d→%d", tn.name, tn.from, tn.to)
		var rest func() (string, error) // reads what comes after the app's last message
		if tn.ws {
			what = "WebSocket " + what
			d := websocket.Dialer{
				NetDial:          func(string, string) (net.Conn, error) { return tn.nc, nil },
				HandshakeTimeout: wait,
			}
			ws, resp, err := d.Dial("ws://"+c.Addr+"/ws", http.Header{"X-Olio-Key": {keyOwnedBy(tn.to, 2)}})
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			resp.Body.Close()
			ws.SetReadDeadline(time.Now().Add(wait))
			if _, m, err := ws.ReadMessage(); err != nil || string(m) != "hello" {
				t.Fatalf("%s: first message %q, %v", what, m, err)
			}
			var ce *websocket.CloseError
			if _, _, err := ws.ReadMessage(); !errors.As(err, &ce) || ce.Text != "the app is done" {
				t.Fatalf("%s: %v, want the app's close frame", what, err)
			}
			rest = func() (string, error) {
				b, err := io.ReadAll(ws.UnderlyingConn())
				return string(b), err
			}
		} else {
			br := bufio.NewReader(tn.nc)
			resp := sendOn(t, tn.nc, br, "/upgrade", tn.to, "Connection: Upgrade\r\nUpgrade: round3\r\n", wait)
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("%s: status %d, want 101", what, resp.StatusCode)
			}
			io.WriteString(tn.nc, "ping\n")
			if line, err := br.ReadString('\n'); err != nil || line != "echo: ping\n" {
				t.Fatalf("%s: through the tunnel %q, %v", what, line, err)
			}
			rest = func() (string, error) {
				b, err := io.ReadAll(br)
				return string(b), err
			}
		}
		tn.nc.SetReadDeadline(time.Now().Add(wait))
		b, err := rest()
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatalf("%s: the client's connection was still open %s after the app ended the tunnel (read %q)", what, wait, b)
		case err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset"):
			t.Fatalf("%s: read %q then %v after the app ended the tunnel, want EOF", what, b, err)
		case b != "":
			t.Errorf("%s: %q after the app ended the tunnel, want nothing more", what, b)
		}
		ends = append(ends, conn{tn.nc, what}) // kept open on the client's side
	}
	// With every client's end still open, the routers have let go of theirs: each is back
	// to (or under) its baseline, which counted the pinned connections.
	var st []string
	if !Eventually(30*time.Second, func() bool {
		now := opStatus(t, c)
		st = st[:0]
		ok := true
		for i, w := range now.Workers {
			b := base.Workers[i]
			n := fds(w.RouterPID)
			st = append(st, fmt.Sprintf("router %d: %d goroutines (baseline %d), %d fds in /proc/%d/fd (baseline %d)", i, w.Goroutines, b.Goroutines, n, w.RouterPID, baseFDs[i]))
			ok = ok && w.RouterPID == b.RouterPID && w.Goroutines <= b.Goroutines && n >= 0 && n <= baseFDs[i]
		}
		return ok
	}) {
		t.Errorf("30s after the apps ended %d tunnels, the routers still hold more than before them:\n%s", len(tunnels), strings.Join(st, "\n"))
	}
}
