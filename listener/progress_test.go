package listener

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// serveControl serves h on a unix socket as the control socket, for the client's tests.
func serveControl(t *testing.T, h http.Handler) *Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return NewClient(path)
}

// The client gets each event in order, then the result and the summary; an error result
// is a ControlError as without progress.
func TestProgressStream(t *testing.T) {
	var fail bool
	cl := serveControl(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps := streamProgress(w, r)
		if ps == nil {
			t.Error("no stream for progress=1")
			return
		}
		st := newStepper(withProgress(context.Background(), ps.progress), StepRestart, 3)
		for i := 0; i < 3; i++ {
			st.did(i, 100+i, time.Now())
		}
		if fail {
			code, a := outcome("", ErrStopped)
			ps.result(code, a, nil)
			return
		}
		ps.result(http.StatusOK, controlAnswer{Message: "reloaded", NotApplied: []string{"listen"}}, &OpSummary{HeldRequests: 7})
	}))
	var got []Progress
	rep, sum, err := cl.ReloadProgress(testContext(t), func(p Progress) { got = append(got, p) })
	if err != nil || sum == nil || sum.HeldRequests != 7 || rep.Message != "reloaded" || !reflect.DeepEqual(rep.NotApplied, []string{"listen"}) {
		t.Fatalf("ReloadProgress = %+v, %+v, %v", rep, sum, err)
	}
	if len(got) != 3 {
		t.Fatalf("%d events, want 3: %+v", len(got), got)
	}
	for i, p := range got {
		if p.Step != StepRestart || p.Index != i || p.Done != i+1 || p.Total != 3 || p.AppPID != 100+i {
			t.Errorf("event %d: %+v", i, p)
		}
	}
	fail = true
	if _, err := cl.ScaleProgress(testContext(t), 2, nil); !errors.Is(err, ErrStopped) {
		t.Errorf("a failed command's stream: %v, want ErrStopped", err)
	}
}

// A master from before progress streaming ignores progress=1 and answers plain JSON: the
// new client reads it as before, with no summary.
func TestProgressFromAnOldMaster(t *testing.T) {
	cl := serveControl(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, controlAnswer{Message: "reloaded"})
	}))
	called := false
	rep, sum, err := cl.ReloadProgress(testContext(t), func(Progress) { called = true })
	if err != nil || sum != nil || called || rep.Message != "reloaded" {
		t.Errorf("ReloadProgress = %+v, %+v, %v (progress called: %v)", rep, sum, err, called)
	}
}

// A stream cut before its result says the command may still be running.
func TestProgressCut(t *testing.T) {
	cl := serveControl(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps := streamProgress(w, r)
		ps.progress(Progress{Step: StepStart, Index: 0, Done: 1, Total: 2})
	}))
	if _, err := cl.ScaleProgress(testContext(t), 2, nil); err == nil || !errors.Is(err, errCut) {
		t.Errorf("ScaleProgress on a cut stream: %v", err)
	}
}

// Without progress=1 the master answers as it always did: one JSON object.
func TestNoProgressUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	s, err := loopMaster(t).listenControl(path, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	resp, err := NewClient(path).send(testContext(t), http.MethodPost, controlReload)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" || resp.StatusCode != 200 {
		t.Errorf("POST /reload without progress: %d %s", resp.StatusCode, ct)
	}
}
