package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The app leg against an app that breaks HTTP/1.1's framing: stray bytes after an answer,
// bare-LF answers, a request run and then the connection closed without an answer.

// injected is an answer nobody asked for, which must never reach a client.
const injected = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Injected: 1\r\n\r\nPWNED-0-xxx"

// rawAnswer serves the hostile app's paths that write raw bytes on the hijacked connection,
// and reports whether r was one of them:
//
//	/extra?kind=K  an answer followed by bytes nobody asked for: injected right after a
//	               200 (now), 50 ms after it (later, noted "STRAY"), after a 204 or 304
//	               or as the body of a HEAD answer (204, 304, head), or two bytes (two)
//	/lf            the answer "ok" with bare LF line ends
//	/runclose      runs the request (noted REQ), then closes without an answer
//
// The connection goes on serving requests as a keep-alive app would: these paths again, and
// any other with the JSON Answer of its own method and path.
func rawAnswer(w http.ResponseWriter, r *http.Request, note func(string, ...any)) bool {
	switch r.URL.Path {
	case "/extra", "/lf", "/runclose":
	default:
		return false
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return true
	}
	defer conn.Close()
	index, _ := strconv.Atoi(os.Getenv("OLIO_INDEX"))
	for req := r; ; {
		const ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		switch kind := req.URL.Query().Get("kind"); {
		case req.URL.Path == "/runclose":
			if req != r {
				note("REQ %s %s 0", req.Method, req.URL.Path)
			}
			return true
		case req.URL.Path == "/lf":
			io.WriteString(conn, "HTTP/1.1 200 OK\nContent-Length: 2\n\nok")
		case req.URL.Path != "/extra":
			n, _ := io.Copy(io.Discard, req.Body)
			b, _ := json.Marshal(Answer{Index: index, PID: os.Getpid(), Method: req.Method, Path: req.URL.Path, BodyBytes: n})
			fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
		case kind == "later":
			io.WriteString(conn, ok)
			time.Sleep(50 * time.Millisecond) // the app's behaviour under test, not a wait
			io.WriteString(conn, injected)
			note("STRAY %s", req.URL.Path)
		case kind == "two":
			io.WriteString(conn, ok+"xx")
		case kind == "204":
			io.WriteString(conn, "HTTP/1.1 204 No Content\r\n\r\n"+injected)
		case kind == "304":
			io.WriteString(conn, "HTTP/1.1 304 Not Modified\r\n\r\n"+injected)
		case kind == "head":
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(injected))+"\r\n\r\n"+injected)
		default:
			io.WriteString(conn, ok+injected)
		}
		if req, err = http.ReadRequest(brw.Reader); err != nil {
			return true
		}
		io.Copy(io.Discard, req.Body)
	}
}

// send sends one request on a new connection (quick) and returns its answer and body.
func send(t *testing.T, c *Cluster, method, path, body string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, c.URL()+path, rd)
	resp, err := quick.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return resp, string(b)
}

// TestHostileAppStrayBytes: bytes an app sends past its answer — at once, 50 ms later on
// the idle connection, after a 204, 304 or HEAD answer, on either engine of the app leg —
// never reach a client: each of the next three clients, on connections of their own, gets
// the answer to its own request, and two stray bytes do not make the next one fail.
func TestHostileAppStrayBytes(t *testing.T) {
	t.Parallel()
	c, record := hostileStart(t, 1)
	for _, tc := range []struct {
		name, method, kind, body string
		status                   int
		follow                   string // the method of the next requests, on the same app pool
	}{
		{"now", "GET", "now", "", 200, "GET"},
		{"later", "GET", "later", "", 200, "GET"},
		{"two", "GET", "two", "", 200, "GET"},
		{"204", "GET", "204", "", 204, "GET"},
		{"304", "GET", "304", "", 304, "GET"},
		{"head", "HEAD", "head", "", 200, "GET"},
		{"delete", "DELETE", "now", "", 200, "DELETE"},
		{"delete-204", "DELETE", "204", "", 204, "DELETE"},
		{"post-body", "POST", "now", "payload", 200, "POST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			strays := strings.Count(readRecords(record, 1), "STRAY")
			resp, body := send(t, c, tc.method, "/extra?kind="+tc.kind, tc.body)
			if resp.StatusCode != tc.status || resp.Header.Get("X-Injected") != "" || strings.Contains(body, "PWNED") {
				t.Fatalf("%s /extra?kind=%s: %d %v %q, want %d and the app's own answer", tc.method, tc.kind, resp.StatusCode, resp.Header, body, tc.status)
			}
			if tc.kind == "later" && !Eventually(10*time.Second, func() bool {
				return strings.Count(readRecords(record, 1), "STRAY") > strays
			}) {
				t.Fatal("the app did not note that it sent its stray answer within 10s")
			}
			for i := range 3 {
				path := fmt.Sprintf("/normal/%s/%d", tc.name, i)
				body := ""
				if tc.follow == "POST" {
					body = "next"
				}
				resp, got := send(t, c, tc.follow, path, body)
				var a Answer
				if resp.StatusCode != 200 || resp.Header.Get("X-Injected") != "" || json.Unmarshal([]byte(got), &a) != nil ||
					a.Path != path || a.Method != tc.follow {
					t.Errorf("client %d after the stray bytes: %s %s got %d %v %q; want 200 and the answer to its own request",
						i, tc.follow, path, resp.StatusCode, resp.Header, got)
				}
			}
		})
	}
}

// TestHostileAppBareLF: an answer with bare LF line ends gets the same answer on every
// method (whichever engine carries it), at once, never after --request-timeout.
func TestHostileAppBareLF(t *testing.T) {
	t.Parallel()
	c, _ := hostileStart(t, 1, "--request-timeout", "30s")
	for _, method := range []string{"GET", "DELETE", "OPTIONS"} {
		start := time.Now()
		resp, body := send(t, c, method, "/lf", "") // quick gives up after 5 s
		if resp.StatusCode != 200 || body != "ok" {
			t.Errorf("%s /lf: %d %q, want 200 \"ok\" as ReverseProxy reads it", method, resp.StatusCode, body)
		}
		t.Logf("%s /lf answered in %s", method, time.Since(start))
	}
}

// TestHostileAppNoResend: a request that is not idempotent, sent on a pooled connection that
// the app closes after running it without answering, runs once and gets 502; only an
// idempotency key (as with http.Transport) lets the router send it again.
func TestHostileAppNoResend(t *testing.T) {
	t.Parallel()
	c, record := hostileStart(t, 1)
	runs := func(method string) int {
		return strings.Count(readRecords(record, 1), "REQ "+method+" /runclose ")
	}
	for _, tc := range []struct {
		method, key string
		runs        int
	}{
		{"POST", "", 1},
		{"DELETE", "", 1},
		{"PATCH", "", 1},
		{"POST", "k-1", 2},
	} {
		before := runs(tc.method)
		// A connection to the app in the pool, so that the request goes out on a reused one.
		if resp, _ := send(t, c, "DELETE", "/warm", ""); resp.StatusCode != 200 {
			t.Fatalf("DELETE /warm: %d", resp.StatusCode)
		}
		req, _ := http.NewRequest(tc.method, c.URL()+"/runclose", nil)
		if tc.key != "" {
			req.Header.Set("Idempotency-Key", tc.key)
		}
		resp, err := quick.Do(req)
		if err != nil {
			t.Fatalf("%s /runclose: %v", tc.method, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s /runclose (key %q): %d, want 502", tc.method, tc.key, resp.StatusCode)
		}
		// The answer comes after every attempt: the count is final.
		if g := runs(tc.method) - before; g != tc.runs {
			t.Errorf("%s /runclose (key %q) ran %d times in the app, want %d", tc.method, tc.key, g, tc.runs)
		}
	}
}
