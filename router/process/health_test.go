package process

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

func TestProbeAppAnswers(t *testing.T) {
	var method, uri string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method, uri = r.Method, r.RequestURI
		w.WriteHeader(http.StatusNotFound) // any answer is an answer
	}))
	defer srv.Close()
	// Go's server answers OPTIONS * itself; the handler above only sees it from others.
	if err := probeApp(context.Background(), port(t, srv.Listener.Addr()), time.Second); err != nil {
		t.Fatalf("probe of a live app: %v", err)
	}
	if method != "" && (method != "OPTIONS" || uri != "*") {
		t.Errorf("probe sent %s %s, want OPTIONS *", method, uri)
	}
}

func TestProbeAppSilent(t *testing.T) {
	// Accepts (the kernel does) but never answers, like a stopped or wedged app.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	if err := probeApp(context.Background(), port(t, ln.Addr()), 100*time.Millisecond); err == nil {
		t.Fatalf("probe of a silent app succeeded")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("probe took %s with a 100ms timeout", took)
	}
}

func TestProbeAppGone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := port(t, ln.Addr())
	ln.Close()
	if err := probeApp(context.Background(), p, time.Second); err == nil {
		t.Fatalf("probe of a closed port succeeded")
	}
}

func TestProbeAppCancelled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a stopping router does not wait for the probe's timeout
	start := time.Now()
	if err := probeApp(ctx, port(t, ln.Addr()), time.Hour); err == nil {
		t.Fatalf("a cancelled probe succeeded")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a cancelled probe took %s", took)
	}
}

func port(t *testing.T, a net.Addr) int {
	t.Helper()
	_, p, err := net.SplitHostPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}
