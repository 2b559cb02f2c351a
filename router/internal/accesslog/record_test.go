package accesslog

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The writer sees the answer's status and bytes, and the app's share of the time from
// StartApp to the answer's header; Finish puts them in the entry.
func TestWriterFinish(t *testing.T) {
	rec := httptest.NewRecorder()
	w := &Writer{ResponseWriter: rec}
	var h http.ResponseWriter = struct{ http.ResponseWriter }{w} // StartApp finds it through a wrapper with no Unwrap: not at all
	StartApp(h)
	if !w.appStart.IsZero() {
		t.Fatal("StartApp reached through a wrapper without Unwrap")
	}
	StartApp(w)
	w.WriteHeader(http.StatusCreated)
	w.Write([]byte("hello"))
	e := Entry{Start: time.Now().Add(-time.Second), App: -1}
	w.Finish(&e)
	if e.Status != http.StatusCreated || e.Out != 5 || e.App < 0 || e.App > e.Total || e.Total < time.Second {
		t.Errorf("entry %+v", e)
	}
	if _, ok := rec.Header()[HeaderAppTime]; ok {
		t.Error("the app time went to a client")
	}

	// Nothing written: net/http answers 200; no app started: its time is unknown.
	w = &Writer{ResponseWriter: httptest.NewRecorder()}
	e = Entry{Start: time.Now(), App: -1}
	w.EndedByHandover()
	w.Finish(&e)
	if e.Status != http.StatusOK || e.App != -1 || !e.Ended {
		t.Errorf("empty answer: entry %+v", e)
	}
}

// Between routers: the owner's writer (Peer) sends its app's time in HeaderAppTime, and
// the accepting router's (Remote) takes it out of the answer as the app's time.
func TestWriterPeerTime(t *testing.T) {
	owner := httptest.NewRecorder()
	pw := &Writer{ResponseWriter: owner, Peer: true}
	StartApp(pw)
	pw.WriteHeader(http.StatusOK)
	v := owner.Header().Get(HeaderAppTime)
	if v == "" {
		t.Fatal("the owner sent no app time")
	}

	client := httptest.NewRecorder()
	aw := &Writer{ResponseWriter: client, Remote: true}
	aw.Header().Set(HeaderAppTime, "1500")
	aw.Write([]byte("x"))
	if _, ok := client.Header()[HeaderAppTime]; ok {
		t.Error("the owner's app time reached the client")
	}
	e := Entry{Start: time.Now(), App: -1}
	aw.Finish(&e)
	if e.App != 1500*time.Microsecond {
		t.Errorf("app time %s, want the owner's 1.5ms", e.App)
	}
}

// CountBody counts the request body bytes the handler reads.
func TestCountBody(t *testing.T) {
	req := httptest.NewRequest("POST", "/", strings.NewReader("hello"))
	var n int64
	CountBody(req, &n)
	io.Copy(io.Discard, req.Body)
	if n != 5 {
		t.Errorf("counted %d bytes, want 5", n)
	}
	req = httptest.NewRequest("GET", "/", nil)
	CountBody(req, &n)
	if req.Body != http.NoBody {
		t.Errorf("a request without a body got one: %T", req.Body)
	}
}
