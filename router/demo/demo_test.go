package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

// demoDo sends req through c and decodes the JSON answer into v (when v is non-nil).
func demoDo(t *testing.T, c *http.Client, req *http.Request, v any) *http.Response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("%s %s: answer %q is not JSON: %v", req.Method, req.URL, body, err)
		}
	}
	return resp
}

func newDemoRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestDemoFields(t *testing.T) {
	srv := httptest.NewServer(New(3))
	defer srv.Close()

	req := newDemoRequest(t, http.MethodPut, srv.URL+"/rooms/42?x=1", strings.NewReader("hello"))
	req.Header.Add("X-Test", "first")
	req.Header.Add("X-Test", "second")
	req.Header.Set("User-Agent", "demo-test")
	var got Answer
	resp := demoDo(t, srv.Client(), req, &got)

	if g, e := resp.StatusCode, http.StatusOK; g != e {
		t.Errorf("status %d, want %d", g, e)
	}
	if g, e := resp.Header.Get("Content-Type"), "application/json"; g != e {
		t.Errorf("Content-Type %q, want %q", g, e)
	}
	want := Answer{
		Index:     3,
		Pid:       os.Getpid(),
		Method:    http.MethodPut,
		Path:      "/rooms/42",
		BodyBytes: 5,
	}
	if g := got; g.Index != want.Index || g.Pid != want.Pid || g.Method != want.Method || g.Path != want.Path || g.BodyBytes != want.BodyBytes {
		t.Errorf("answer %+v, want %+v", g, want)
	}
	for name, value := range map[string]string{"X-Test": "first", "User-Agent": "demo-test", "Content-Length": "5"} {
		if g := got.Headers[name]; g != value {
			t.Errorf("headers[%q] = %q, want %q (all: %v)", name, g, value, got.Headers)
		}
	}

	// The JSON field names are the contract with e2e tests and benchmarks.
	var raw map[string]json.RawMessage
	demoDo(t, srv.Client(), newDemoRequest(t, http.MethodGet, srv.URL+"/", nil), &raw)
	for _, field := range []string{"index", "pid", "method", "path", "headers", "body_bytes"} {
		if _, ok := raw[field]; !ok {
			t.Errorf("answer lacks %q: %v", field, raw)
		}
	}
	if len(raw) != 6 {
		t.Errorf("answer has %d fields, want 6: %v", len(raw), raw)
	}
}

func TestDemoBodyBytes(t *testing.T) {
	srv := httptest.NewServer(New(0))
	defer srv.Close()
	const size = 1 << 20
	req := newDemoRequest(t, http.MethodPost, srv.URL+"/upload", bytes.NewReader(make([]byte, size)))
	var got Answer
	demoDo(t, srv.Client(), req, &got)
	if g, e := got.BodyBytes, int64(size); g != e {
		t.Errorf("body_bytes = %d, want %d", g, e)
	}

	// Chunked, of unknown length.
	req = newDemoRequest(t, http.MethodPost, srv.URL+"/upload", io.LimitReader(neverEOF{}, size))
	req.ContentLength = -1
	demoDo(t, srv.Client(), req, &got)
	if g, e := got.BodyBytes, int64(size); g != e {
		t.Errorf("chunked: body_bytes = %d, want %d", g, e)
	}
}

type neverEOF struct{}

func (neverEOF) Read(p []byte) (int, error) { return len(p), nil }

func TestDemoStatus(t *testing.T) {
	srv := httptest.NewServer(New(1))
	defer srv.Close()
	for _, tt := range []struct {
		query  string
		status int
		json   bool // a JSON body of the usual answer
	}{
		{"", 200, true},
		{"status=200", 200, true},
		{"status=201", 201, true},
		{"status=418", 418, true},
		{"status=503", 503, true},
		{"status=599", 599, true},
		{"status=204", 204, false},
		{"status=304", 304, false},
	} {
		req := newDemoRequest(t, http.MethodGet, srv.URL+"/s?"+tt.query, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("?%s: status %d, want %d", tt.query, resp.StatusCode, tt.status)
		}
		var got Answer
		if err := json.Unmarshal(body, &got); tt.json && (err != nil || got.Path != "/s") {
			t.Errorf("?%s: body %q, want the JSON answer", tt.query, body)
		}
		if !tt.json && len(body) != 0 {
			t.Errorf("?%s: body %q, want none", tt.query, body)
		}
	}
}

func TestDemoStatusInformational(t *testing.T) {
	srv := httptest.NewServer(New(1))
	defer srv.Close()
	var interim []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
		interim = append(interim, code)
		return nil
	}}
	req := newDemoRequest(t, http.MethodGet, srv.URL+"/?status=103", nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	var got Answer
	resp := demoDo(t, srv.Client(), req, &got)
	if resp.StatusCode != http.StatusOK || len(interim) != 1 || interim[0] != 103 || got.Path != "/" {
		t.Errorf("?status=103: interim %v, final %d %+v; want 103 then 200 with the answer", interim, resp.StatusCode, got)
	}
}

func TestDemoBadQuery(t *testing.T) {
	srv := httptest.NewServer(New(1))
	defer srv.Close()
	for _, tt := range []struct{ query, says string }{
		{"status=99", `status="99"`},
		{"status=600", `status="600"`},
		{"status=abc", `status="abc"`},
		{"status=-200", `status="-200"`},
		{"status=101", `status=101`},
		{"sleep=-1", `sleep="-1"`},
		{"sleep=abc", `sleep="abc"`},
		{"sleep=1.5", `sleep="1.5"`},
		{"sleep=3600001", `sleep="3600001"`},
		{"sleep=99999999999999999999", `sleep="99999999999999999999"`},
	} {
		var got struct{ Error string }
		resp := demoDo(t, srv.Client(), newDemoRequest(t, http.MethodGet, srv.URL+"/?"+tt.query, nil), &got)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(got.Error, tt.says) {
			t.Errorf("?%s: %d %q, want 400 with an error saying %s", tt.query, resp.StatusCode, got.Error, tt.says)
		}
		if g, e := resp.Header.Get("Content-Type"), "application/json"; g != e {
			t.Errorf("?%s: Content-Type %q, want %q", tt.query, g, e)
		}
	}
}

func TestDemoSleep(t *testing.T) {
	srv := httptest.NewServer(New(1))
	defer srv.Close()
	const sleep = 30 * time.Millisecond
	start := time.Now()
	var got Answer
	resp := demoDo(t, srv.Client(), newDemoRequest(t, http.MethodGet, srv.URL+"/slow?sleep=30&status=202", nil), &got)
	if elapsed := time.Since(start); elapsed < sleep {
		t.Errorf("?sleep=30 answered after %v, want at least %v", elapsed, sleep)
	}
	if resp.StatusCode != http.StatusAccepted || got.Path != "/slow" {
		t.Errorf("?sleep=30&status=202: %d %+v", resp.StatusCode, got)
	}
	resp = demoDo(t, srv.Client(), newDemoRequest(t, http.MethodGet, srv.URL+"/?sleep=0", nil), &got)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("?sleep=0: status %d", resp.StatusCode)
	}
}

// A request cancelled while it sleeps ends at once, with nothing written.
func TestDemoSleepCancelled(t *testing.T) {
	d := New(2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d.onSleep = cancel
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/?sleep=3600000", nil)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.ServeHTTP(rec, req)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler kept sleeping after its request was cancelled")
	}
	if rec.Body.Len() != 0 || len(rec.Header()) != 0 {
		t.Errorf("cancelled request was answered: %d %q %v", rec.Code, rec.Body, rec.Header())
	}
}

func dialDemoWS(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(url, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return conn
}

func TestDemoWebSocketEcho(t *testing.T) {
	srv := httptest.NewServer(New(5))
	defer srv.Close()
	conn := dialDemoWS(t, srv.URL)
	defer conn.Close()

	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	for _, m := range []struct {
		typ  int
		data []byte
	}{
		{websocket.TextMessage, []byte("hello")},
		{websocket.BinaryMessage, []byte{0, 1, 2, 255}},
		{websocket.TextMessage, nil},
		{websocket.BinaryMessage, big},
	} {
		if err := conn.WriteMessage(m.typ, m.data); err != nil {
			t.Fatal(err)
		}
		typ, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if typ != m.typ || !bytes.Equal(data, m.data) {
			t.Errorf("echo of a %d-byte message of type %d: %d bytes of type %d", len(m.data), m.typ, len(data), typ)
		}
	}
	// A clean close is answered with a clean close.
	if err := conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := conn.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("after closing: %v, want close 1000", err)
	}
}

func TestDemoWebSocketNotUpgrade(t *testing.T) {
	srv := httptest.NewServer(New(5))
	defer srv.Close()
	var got struct{ Error string }
	resp := demoDo(t, srv.Client(), newDemoRequest(t, http.MethodGet, srv.URL+"/ws", nil), &got)
	if resp.StatusCode != http.StatusBadRequest || got.Error == "" {
		t.Errorf("plain GET /ws: %d %q, want 400 with a JSON error", resp.StatusCode, got.Error)
	}
}

// Shutdown lets a sleeping request finish, says goodbye to WebSocket clients, and leaves no
// goroutine behind.
func TestDemoServeGracefulShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	d := New(7)
	sleeping := make(chan struct{})
	d.onSleep = func() { close(sleeping) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, d, nil) }()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	ws := dialDemoWS(t, url)
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "ping" {
		t.Fatalf("echo: %q, %v", msg, err)
	}

	type result struct {
		answer Answer
		status int
		err    error
	}
	slow := make(chan result, 1)
	go func() {
		var r result
		resp, err := client.Get(url + "/slow?sleep=200")
		if err != nil {
			r.err = err
		} else {
			r.status = resp.StatusCode
			r.err = json.NewDecoder(resp.Body).Decode(&r.answer)
			resp.Body.Close()
		}
		slow <- r
	}()
	<-sleeping
	cancel()

	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Errorf("WebSocket at shutdown: %v, want close 1001", err)
	}
	r := <-slow
	if r.err != nil || r.status != http.StatusOK || r.answer.Index != 7 {
		t.Errorf("request in flight at shutdown: %d %+v %v, want it answered", r.status, r.answer, r.err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("still accepting after shutdown")
	}
}

func TestRunDemo(t *testing.T) {
	if err := Run(context.Background(), Env{}, nil); err == nil || !strings.Contains(err.Error(), "PORT") {
		t.Errorf("no port: %v, want an error about PORT", err)
	}
	for _, port := range []string{"http", "-1", "65536", " 80"} {
		if err := Run(context.Background(), Env{Port: port}, nil); err == nil || !strings.Contains(err.Error(), "PORT=") {
			t.Errorf("port %q: %v, want an error about PORT", port, err)
		}
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, port, _ := net.SplitHostPort(busy.Addr().String())
	if err := Run(context.Background(), Env{Port: port}, nil); err == nil {
		t.Errorf("port %s in use: no error", port)
	}

	// With ctx already done it binds, then shuts down at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Run(ctx, Env{Port: "0"}, nil); err != nil {
		t.Errorf("Run with ctx done: %v", err)
	}
}

// notifySocket is a unixgram socket at addr (@ for an abstract address) that hands what it
// receives to the returned channel.
func notifySocket(t *testing.T, addr string) <-chan string {
	t.Helper()
	name := addr
	if name[0] == '@' {
		name = "\x00" + name[1:]
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 64)
		if n, err := conn.Read(b); err == nil {
			got <- string(b[:n])
		}
	}()
	return got
}

// With NOTIFY_SOCKET set (olio serve --ready notify), the demo says READY=1 once it
// listens, at a path or an abstract address.
func TestDemoNotifiesReady(t *testing.T) {
	for _, addr := range []string{
		filepath.Join(t.TempDir(), "notify.sock"),
		"@olio-demo-test-" + strconv.Itoa(os.Getpid()),
	} {
		got := notifySocket(t, addr)
		ctx, cancel := context.WithCancel(context.Background())
		var logged bytes.Buffer
		done := make(chan error, 1)
		go func() { done <- Run(ctx, Env{Port: "0", NotifySocket: addr}, stdlog.New(&logged, "", 0)) }()
		select {
		case msg := <-got:
			if msg != "READY=1" {
				t.Errorf("%s got %q, want READY=1", addr, msg)
			}
		case err := <-done:
			t.Fatalf("%s: the demo exited without notifying: %v", addr, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no READY=1 within 10s", addr)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		// Plain lines, which olio serve stamps with time and worker itself.
		if l := logged.String(); !strings.HasPrefix(l, "demo app listening on 127.0.0.1:") || strings.Contains(l, "msg=") || strings.Contains(l, `"`) {
			t.Errorf("the demo logged %q, want plain lines like \"demo app listening on 127.0.0.1:PORT\"", l)
		}
	}

	// Nobody listens on NOTIFY_SOCKET: the demo says so and exits, rather than never
	// becoming ready.
	nobody := filepath.Join(t.TempDir(), "nobody.sock")
	if err := Run(context.Background(), Env{Port: "0", NotifySocket: nobody}, nil); err == nil || !strings.Contains(err.Error(), nobody) {
		t.Errorf("NOTIFY_SOCKET with nobody there: %v, want an error naming it", err)
	}
}

func BenchmarkDemoHandler(b *testing.B) {
	h := New(1)
	req := httptest.NewRequest(http.MethodGet, "/rooms/42", nil)
	req.Header.Set("User-Agent", "bench")
	req.Header.Set("Accept", "*/*")
	req.Header.Set("X-Olio-Key", "user-1234567")
	req.Header.Set("X-Forwarded-For", "127.0.0.1")
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
	}
}
