package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The third round of hostile clients, at olio's edges: early answers to a client still
// sending, a front's forwarded headers, look-alike header names, path and host keys.

// earlyAnswer sends a header of 2 MiB on conn (after what br has already read of it) while
// reading the answer, and reports what the client sees: the status, the body, and how the
// connection ended after it (nil: a clean EOF).
func earlyAnswer(t *testing.T, conn net.Conn, br *bufio.Reader) (status int, body string, end error) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		// The router stops reading at its limit: this write fails or blocks until the close.
		io.WriteString(conn, "GET /big HTTP/1.1\r\nHost: t\r\nX-Big: "+strings.Repeat("b", 2<<20)+"\r\n\r\n")
	}()
	defer func() { conn.Close(); <-wrote }()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a 2 MiB header: %v", err)
	}
	b, err := io.ReadAll(resp.Body) // the 431 has no length: its body ends with the connection
	resp.Body.Close()
	if err == nil {
		_, err = br.ReadByte()
		if err == io.EOF {
			err = nil
		} else if err == nil {
			err = fmt.Errorf("bytes after the answer")
		}
	}
	return resp.StatusCode, string(b), err
}

// TestHostileEarlyAnswerCleanClose: a request header past --max-header-bytes gets 431 and
// the connection's clean end (a FIN: net/http half-closes, then waits for the client to
// read), not a reset that loses the answer: on a fresh connection, on a kept-alive one the
// router that accepted it serves, and on one handed off to its owner. --max-conns is on, so
// its slot wrapper is on the way too.
func TestHostileEarlyAnswerCleanClose(t *testing.T) {
	t.Parallel()
	metrics := freeAddr(t)
	c, _ := hostileStart(t, 2, "--max-conns", "64", "--metrics", metrics)
	check := func(what string, status int, body string, end error) {
		t.Helper()
		if status != http.StatusRequestHeaderFieldsTooLarge || !strings.Contains(body, "431") || end != nil {
			t.Errorf("%s: a 2 MiB header got %d %q, then %v; want 431, its whole body, then a clean EOF", what, status, body, end)
		}
	}
	for try := 0; try < 3; try++ {
		conn, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		status, body, end := earlyAnswer(t, conn, bufio.NewReader(conn))
		check("a fresh connection", status, body, end)
	}
	key := keyOwnedBy(1, 2)
	kept, handed := 0, 0
	for try := 0; try < 40 && (kept < 2 || handed < 2); try++ {
		before := metric(t, metrics, "olio_connections_handed_in_total")
		conn, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET /first HTTP/1.1\r\nHost: t\r\nX-Olio-Key: %s\r\n\r\n", key)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			conn.Close()
			t.Fatalf("first request: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		what := "a kept-alive connection"
		if metric(t, metrics, "olio_connections_handed_in_total") > before {
			what = "a handed-off connection"
			handed++
		} else {
			kept++
		}
		status, body, end := earlyAnswer(t, conn, br)
		check(what, status, body, end)
	}
	if kept == 0 || handed == 0 {
		t.Fatalf("the test did not test both cases: %d connections kept by their router, %d handed off", kept, handed)
	}
}

// rawIndex sends one raw request on a fresh connection and returns the worker whose app
// answered it.
func rawIndex(t *testing.T, c *Cluster, req string) int {
	t.Helper()
	resp, body := c.raw(t, req)
	a, err := decodeAnswer(resp.StatusCode, []byte(body))
	if err != nil {
		t.Fatalf("%.80q: %v", req, err)
	}
	return a.Index
}

// TestHostilePathKeysAsFrameworksSee: with --key path:2, the spellings of one path that a
// framework serves as one ("//", "/./", "/x/../") are one key and reach one worker, the
// owner of "kitchen"; so does --key path for the whole path.
func TestHostilePathKeysAsFrameworksSee(t *testing.T) {
	t.Parallel()
	const n = 3
	// A room whose owner is neither the owner of "." nor that of "..", the keys the
	// uncleaned spellings would have.
	room := ""
	for i := 0; room == ""; i++ {
		r := "kitchen" + strconv.Itoa(i)
		if o := Owner(r, n); o != Owner(".", n) && o != Owner("..", n) && o != Owner("/x/../rooms/"+r, n) {
			room = r
		}
	}
	spellings := []string{"/rooms/" + room, "/rooms//" + room, "/x/../rooms/" + room, "/rooms/./" + room, "//rooms/%2e/" + room + "/"}
	for _, tc := range []struct{ spec, key string }{{"path:2", room}, {"path", "/rooms/" + room}} {
		t.Run(tc.spec, func(t *testing.T) {
			c, _ := hostileStart(t, n, "--key", tc.spec)
			want := Owner(tc.key, n)
			for try := 0; try < 3; try++ { // fresh connections, accepted by any router
				for _, p := range spellings {
					if p == spellings[4] && tc.spec == "path" {
						continue // its trailing "/" is a different path
					}
					if got := rawIndex(t, c, "GET "+p+" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"); got != want {
						t.Errorf("--key %s: GET %s served by worker %d, want %d (the owner of %q)", tc.spec, p, got, want, tc.key)
					}
				}
			}
		})
	}
}

// TestHostileHostKeysIgnoreCaseDotPort: with --key host, a host's key ignores case, the
// port and the trailing dot of a fully qualified name.
func TestHostileHostKeysIgnoreCaseDotPort(t *testing.T) {
	t.Parallel()
	const n = 3
	host := ""
	for i := 0; host == ""; i++ {
		h := "h" + strconv.Itoa(i) + ".example"
		if Owner(h, n) != Owner(h+".", n) {
			host = h
		}
	}
	c, _ := hostileStart(t, n, "--key", "host")
	want := Owner(host, n)
	for try := 0; try < 3; try++ {
		for _, h := range []string{host, strings.ToUpper(host) + ".:8080", host + ".", "H" + host[1:] + ":9"} {
			if got := rawIndex(t, c, "GET / HTTP/1.1\r\nHost: "+h+"\r\nConnection: close\r\n\r\n"); got != want {
				t.Errorf("--key host: Host %s served by worker %d, want %d (the owner of %q)", h, got, want, host)
			}
		}
	}
}

// TestHostileForwardedTrust: a front listed in --forwarded-allow-ips has its X-Forwarded-For
// appended to and its X-Forwarded-Proto, X-Forwarded-Host and Forwarded passed; any other
// client's are replaced by olio's (Forwarded dropped). The same on every leg: served where
// accepted or forwarded to the owner, by the app fast path (GET) or the proxy (POST). And
// look-alike fields spelled with "_" (X_Olio_Secret, X_Forwarded_For), which WSGI and CGI
// stacks read as olio's, never reach the app.
func TestHostileForwardedTrust(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		allow   string
		trusted bool
	}{{"10.0.0.0/8,127.0.0.1", true}, {"10.0.0.0/8,::1", false}} {
		t.Run(tc.allow, func(t *testing.T) {
			c, _ := hostileStart(t, 2, "--forwarded-allow-ips", tc.allow, "--secret", "edges-secret-0123456789")
			want := map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": c.Addr}
			if tc.trusted {
				want = map[string]string{"X-Forwarded-For": "203.0.113.7, 127.0.0.1", "X-Forwarded-Proto": "https",
					"X-Forwarded-Host": "shop.example", "Forwarded": "for=203.0.113.7;proto=https"}
			}
			hc, _ := pinnedClient(t, c, 0) // past its probe: not handed off, so key 1's requests are forwarded
			for owner := 0; owner < 2; owner++ {
				for _, method := range []string{"GET", "POST"} {
					req, _ := http.NewRequest(method, c.URL()+"/fw", strings.NewReader("body"))
					if method == "GET" {
						req.Body, req.ContentLength = nil, 0
					}
					req.Header = http.Header{
						"X-Olio-Key":        {keyOwnedBy(owner, 2)},
						"X-Forwarded-For":   {"203.0.113.7"},
						"X-Forwarded-Proto": {"https"},
						"X-Forwarded-Host":  {"shop.example"},
						"Forwarded":         {"for=203.0.113.7;proto=https"},
						"X_Olio_Index":      {"1"},
						"x_olio_secret":     {"guess"},
						"X_Forwarded_For":   {"6.6.6.6"},
						"X_Olio_Key":        {"other"},
						"X_Own_Field":       {"kept"},
					}
					a, err := Do(hc, req)
					if err != nil {
						t.Fatalf("%s for worker %d: %v", method, owner, err)
					}
					what := fmt.Sprintf("%s served by worker %d via router 0", method, a.Index)
					if a.Index != owner {
						t.Errorf("%s: want worker %d", what, owner)
					}
					for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"} {
						if g, e := a.Headers[k], want[k]; g != e {
							t.Errorf("%s: the app got %s %q, want %q", what, k, g, e)
						}
					}
					for k := range a.Headers {
						if strings.Contains(k, "_") && k != "X_own_field" {
							t.Errorf("%s: the app got the look-alike field %s: %q", what, k, a.Headers[k])
						}
					}
					if a.Headers["X_own_field"] != "kept" {
						t.Errorf("%s: an app's own field with \"_\" was dropped (headers %v)", what, a.Headers)
					}
				}
			}
		})
	}
}
