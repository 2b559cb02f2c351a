package listener

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/olio-dev/olio/descend"
)

// readyAnswer is GET /ready's status and body.
func readyAnswer(m *Master) (int, string) {
	rec := httptest.NewRecorder()
	m.serveReady(rec, httptest.NewRequest("GET", "/ready", nil))
	return rec.Code, strings.TrimSpace(rec.Body.String())
}

// /ready is 200 only while every member has an app serving and olio is not stopping; a
// rolling restart's new app starting does not count against a worker, a crash does.
func TestReady(t *testing.T) {
	m := bareMaster()
	var ws []*worker
	state := func(w *worker, s descend.WorkerState) {
		w.mu.Lock()
		w.noteStateLocked(s)
		w.mu.Unlock()
	}
	for _, step := range []struct {
		name   string
		change func()
		code   int
		body   string
	}{
		{"no workers", func() {}, 503, "not ready: no workers (scaled to zero)"},
		{"starting", func() {
			ws = []*worker{m.newWorker(0, Config{}), m.newWorker(1, Config{})}
			m.view.Store(&view{workers: ws, members: 2})
		}, 503, "not ready: 2 of 2 workers not ready (worker 0 first)"},
		{"one ready", func() { state(ws[0], descend.StateReady) }, 503, "not ready: 1 of 2 workers not ready (worker 1 first)"},
		{"all ready", func() { state(ws[1], descend.StateReady) }, 200, "ready: 2 workers ready"},
		{"a new app starting (rolling restart)", func() { state(ws[0], descend.StateStarting) }, 200, "ready: 2 workers ready"},
		{"an app crashed", func() { state(ws[1], descend.StateBackoff) }, 503, "not ready: 1 of 2 workers not ready (worker 1 first)"},
		{"back", func() { state(ws[1], descend.StateReady) }, 200, "ready: 2 workers ready"},
		{"a worker joining is not a member yet", func() {
			ws = append(ws, m.newWorker(2, Config{}))
			m.view.Store(&view{workers: ws, members: 2})
		}, 200, "ready: 2 workers ready"},
		{"stopping", func() {
			m.endLife()
		}, 503, "not ready: olio is stopping"},
	} {
		step.change()
		if code, body := readyAnswer(m); code != step.code || body != step.body {
			t.Errorf("%s: %d %q, want %d %q", step.name, code, body, step.code, step.body)
		}
	}
}

// The metrics server answers /ready next to /metrics, GET and HEAD.
func TestReadyServed(t *testing.T) {
	m := bareMaster()
	s, err := m.serveMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	for _, method := range []string{"GET", "HEAD"} {
		req, _ := http.NewRequest(method, "http://"+s.addr+"/ready", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s /ready with no workers: %d (Cache-Control %q), want 503 (no-store)", method, resp.StatusCode, resp.Header.Get("Cache-Control"))
		}
	}
}

// A drain delay ends when it has passed, or at once when Kill is called (a second stop
// signal): tested with a delay that cannot pass during the test.
func TestDrainDelay(t *testing.T) {
	m := bareMaster()
	m.view.Store(&view{cfg: Config{DrainDelay: time.Hour}})
	m.Kill()
	done := make(chan struct{})
	go func() { m.waitDrainDelay(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the drain delay went on after Kill")
	}
	m.view.Store(&view{cfg: Config{DrainDelay: time.Nanosecond}})
	m.killed = make(chan struct{})
	m.killOnce = sync.Once{}
	m.waitDrainDelay() // returns: the delay has passed (the test would time out otherwise)
}
