package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestHTTPConn(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch key := r.Header.Get(keyHeader); key {
		case "chunked":
			w.Write([]byte(`{"index":`))
			w.(http.Flusher).Flush() // forces chunked encoding
			w.Write([]byte(`2}`))
		case "close":
			w.Header().Set("Connection", "close")
			w.Write([]byte(`{"index":1}`))
		case "teapot":
			w.WriteHeader(http.StatusTeapot)
		default:
			w.Write([]byte(`{"index":0,"key":"` + key + `"}`))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	h := &httpConn{addr: strings.TrimPrefix(srv.URL, "http://")}
	defer h.close()
	var body bytes.Buffer
	for _, c := range []struct {
		key, body string
		status    int
	}{
		{"alice", `{"index":0,"key":"alice"}`, 200},
		{"chunked", `{"index":2}`, 200},
		{"bob", `{"index":0,"key":"bob"}`, 200},
		{"teapot", ``, 418},
		{"close", `{"index":1}`, 200},
		{"carol", `{"index":0,"key":"carol"}`, 200},
	} {
		status, err := h.get(c.key, &body)
		if err != nil {
			t.Fatalf("get(%s): %v", c.key, err)
		}
		if status != c.status || body.String() != c.body {
			t.Errorf("get(%s) = %d %q, want %d %q", c.key, status, body.String(), c.status, c.body)
		}
	}
	srv.Close() // waits for the server's connections: conns is settled
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (one kept alive, one after Connection: close)", n)
	}
}
