package process

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/olio-dev/olio/router/internal/appleg"
)

func fanoutRequest(body, secret string) *http.Request {
	req := httptest.NewRequest("POST", "/broadcast", strings.NewReader(body))
	req.Header.Set(HeaderIndex, FanoutIndex)
	if secret != "" {
		req.Header.Set(HeaderSecret, secret)
	}
	return req
}

func TestFanoutEveryWorkerAnswers(t *testing.T) {
	tc := newTestCluster(t, 3, time.Second)
	for accept := 0; accept < 3; accept++ {
		rec := httptest.NewRecorder()
		tc.routers[accept].ServeHTTP(rec, fanoutRequest("hello", "s3cr3t"))
		if rec.Code != http.StatusOK {
			t.Fatalf("via %d: %d %s", accept, rec.Code, rec.Body)
		}
		if g, e := rec.Header().Get("Content-Type"), "application/json"; g != e {
			t.Errorf("Content-Type = %q, want %q", g, e)
		}
		var answers []FanoutAnswer
		if err := json.Unmarshal(rec.Body.Bytes(), &answers); err != nil {
			t.Fatalf("via %d: %v in %q", accept, err, rec.Body)
		}
		if len(answers) != 3 {
			t.Fatalf("via %d: %d answers, want 3", accept, len(answers))
		}
		for i, a := range answers {
			var app testAnswer
			if err := json.Unmarshal([]byte(a.Body), &app); err != nil {
				t.Fatalf("answer %d: body %q: %v", i, a.Body, err)
			}
			if a.Index != i || a.Status != 200 || app.Index != i || app.Body != 5 {
				t.Errorf("via %d, answer %d: index %d status %d, app %d got %d body bytes", accept, i, a.Index, a.Status, app.Index, app.Body)
			}
			if app.Headers.Get(HeaderIndex) != "" || app.Headers.Get(HeaderSecret) != "" {
				t.Errorf("answer %d: the app saw olio's headers: %v", i, app.Headers)
			}
			if a.Headers.Get("Content-Type") == "" {
				t.Errorf("answer %d: the app's response headers are missing: %v", i, a.Headers)
			}
		}
		if strings.Contains(rec.Body.String(), "s3cr3t") {
			t.Errorf("the answer holds the secret: %s", rec.Body)
		}
	}
	for i, r := range tc.routers {
		if g, e := r.counters.served.Load(), uint64(3); g != e {
			t.Errorf("router %d served %d, want %d (one per fan-out)", i, g, e)
		}
		if g, e := r.counters.forwardedOut.Load(), uint64(2); g != e {
			t.Errorf("router %d forwarded %d, want %d", i, g, e)
		}
	}
}

func TestFanoutRefusals(t *testing.T) {
	tc := newTestCluster(t, 2, time.Second)
	big := strings.Repeat("x", MaxFanoutBody+1)
	upgrade := fanoutRequest("", "s3cr3t")
	upgrade.Header.Set("Connection", "keep-alive, Upgrade")
	upgrade.Header.Set("Upgrade", "websocket")
	for _, c := range []struct {
		name string
		req  *http.Request
		code int
	}{
		{"wrong secret", fanoutRequest("x", "wrong"), http.StatusForbidden},
		{"no secret", fanoutRequest("x", ""), http.StatusForbidden},
		{"body too large", fanoutRequest(big, "s3cr3t"), http.StatusRequestEntityTooLarge},
		{"upgrade", upgrade, http.StatusBadRequest},
	} {
		rec := httptest.NewRecorder()
		tc.routers[0].ServeHTTP(rec, c.req)
		if rec.Code != c.code {
			t.Errorf("%s: %d %q, want %d", c.name, rec.Code, rec.Body, c.code)
		}
	}
	if g := tc.routers[0].counters.served.Load() + tc.routers[1].counters.served.Load(); g != 0 {
		t.Errorf("refused fan-outs reached the apps %d times", g)
	}
}

func TestFanoutWriterBounds(t *testing.T) {
	f := &fanoutWriter{header: http.Header{}}
	chunk := bytes.Repeat([]byte("a"), 64<<10)
	for n := 0; n < MaxFanoutAnswer; n += len(chunk) {
		if k, err := f.Write(chunk); k != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v within the bound", k, err)
		}
	}
	if k, err := f.Write(chunk); k != 0 || !errors.Is(err, errFanoutCut) {
		t.Fatalf("Write past the bound = %d, %v; want 0, errFanoutCut: the leg stops reading there", k, err)
	}
	if f.body.Len() != MaxFanoutAnswer || !f.truncated || f.status != 200 {
		t.Errorf("kept %d bytes, truncated %v, status %d; want %d, true, 200", f.body.Len(), f.truncated, f.status, MaxFanoutAnswer)
	}
	f = &fanoutWriter{header: http.Header{}}
	f.WriteHeader(http.StatusContinue)
	f.WriteHeader(http.StatusTeapot)
	f.WriteHeader(http.StatusOK)
	if f.status != http.StatusTeapot {
		t.Errorf("status %d, want the first final status %d", f.status, http.StatusTeapot)
	}
}

func TestFanoutAnswerBody(t *testing.T) {
	for _, c := range []struct {
		in        []byte
		text, b64 string
	}{
		{[]byte(`{"a":"é"}`), `{"a":"é"}`, ""},
		{[]byte{0xff, 0xfe, 0}, "", "//4A"},
		{nil, "", ""},
	} {
		var a FanoutAnswer
		a.setBody(c.in)
		if a.Body != c.text || a.BodyBase64 != c.b64 {
			t.Errorf("setBody(%q) = body %q, base64 %q; want %q, %q", c.in, a.Body, a.BodyBase64, c.text, c.b64)
		}
	}
}

// The fan-out's limits are inclusive: a body of exactly MaxFanoutBody goes out, an answer of
// exactly MaxFanoutAnswer is kept whole; and a leg's own status is reported as it is.
func TestFanoutAtTheLimits(t *testing.T) {
	tc := newTestCluster(t, 2, 50*time.Millisecond)
	tc.routers[1].apps.setCurrent(nil) // worker 1's leg waits for its app, then gets 503
	rec := httptest.NewRecorder()
	tc.routers[0].ServeHTTP(rec, fanoutRequest(strings.Repeat("x", MaxFanoutBody), "s3cr3t"))
	var answers []FanoutAnswer
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &answers) != nil || len(answers) != 2 {
		t.Fatalf("a %d-byte fan-out: %d %.200s", MaxFanoutBody, rec.Code, rec.Body)
	}
	if answers[0].Status != http.StatusOK || answers[1].Status != http.StatusServiceUnavailable {
		t.Errorf("leg statuses %d and %d, want 200 and 503 (worker 1 has no app)", answers[0].Status, answers[1].Status)
	}

	f := &fanoutWriter{header: http.Header{}}
	f.WriteHeader(http.StatusOK)
	f.WriteHeader(http.StatusInternalServerError)
	if k, err := f.Write(bytes.Repeat([]byte("a"), MaxFanoutAnswer)); k != MaxFanoutAnswer || err != nil {
		t.Fatalf("Write = %d, %v", k, err)
	}
	if f.body.Len() != MaxFanoutAnswer || f.truncated || f.status != http.StatusOK {
		t.Errorf("an answer of exactly %d bytes: kept %d, truncated %v, status %d; want all of it, false, 200", MaxFanoutAnswer, f.body.Len(), f.truncated, f.status)
	}
}

// TestFanoutLegSurvivesABrokenAnswer: a fanned-out GET whose app breaks its answer off gets
// that leg's partial answer, and the router lives on: the leg runs on a goroutine of its
// own, where the abort a server recovers would end the process.
func TestFanoutLegSurvivesABrokenAnswer(t *testing.T) {
	tc := newTestCluster(t, 1, time.Second)
	r := tc.routers[0]
	app := rawApp(t, map[string]string{"/broadcast": "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello"})
	port := app.Listener.Addr().(*net.TCPAddr).Port
	inst := &instance{port: port, transport: appleg.New(port)}
	defer inst.transport.CloseIdleConnections()
	r.apps.setCurrent(inst)

	req := httptest.NewRequest("GET", "/broadcast", nil)
	req.Header.Set(HeaderIndex, FanoutIndex)
	req.Header.Set(HeaderSecret, "s3cr3t")
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("fan-out: %d %s", rec.Code, rec.Body)
	}
	var answers []FanoutAnswer
	if err := json.Unmarshal(rec.Body.Bytes(), &answers); err != nil || len(answers) != 1 {
		t.Fatalf("fan-out answers %q: %v", rec.Body, err)
	}
	if a := answers[0]; a.Body != "hello" {
		t.Errorf("the broken leg's body = %q, want what came before the break, \"hello\"", a.Body)
	}
}

// A fan-out leg stops reading an app's answer at MaxFanoutAnswer and closes the connection:
// the app cannot write much more than the cut (plus socket buffers), on either engine.
func TestFanoutStopsReadingAtTheCut(t *testing.T) {
	const huge = 512 << 20
	for _, method := range []string{"GET", "DELETE"} {
		t.Run(method, func(t *testing.T) {
			done := make(chan int64, 1)
			app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				buf := make([]byte, 64<<10)
				var n int64
				for n < huge {
					k, err := w.Write(buf)
					n += int64(k)
					if err != nil {
						break
					}
				}
				done <- n
			}))
			defer app.Close()
			tc := newTestCluster(t, 1, time.Second)
			r := tc.routers[0]
			port := app.Listener.Addr().(*net.TCPAddr).Port
			inst := &instance{port: port, transport: appleg.New(port)}
			defer inst.transport.CloseIdleConnections()
			r.apps.setCurrent(inst)

			req := httptest.NewRequest(method, "/big", nil)
			req.Header.Set(HeaderIndex, FanoutIndex)
			req.Header.Set(HeaderSecret, "s3cr3t")
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, req)
			var answers []FanoutAnswer
			if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &answers) != nil || len(answers) != 1 {
				t.Fatalf("fan-out: %d %.200s", rec.Code, rec.Body)
			}
			if a := answers[0]; !a.Truncated || len(a.Body)+len(a.BodyBase64) == 0 {
				t.Errorf("the leg's answer: truncated %v, %d bytes; want truncated at the cut", a.Truncated, len(a.Body))
			}
			select {
			case n := <-done:
				t.Logf("the app wrote %d bytes", n)
				if n >= 64<<20 {
					t.Errorf("the app wrote %d bytes before its connection closed; the leg read on past the %d-byte cut", n, MaxFanoutAnswer)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the app was still writing 30s after the fan-out answered: its connection was not closed")
			}
		})
	}
}
