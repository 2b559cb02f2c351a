package process

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router/internal/appleg"
)

// fastFront is a public server in front of one app, serving every request through the
// router's serveApp (the app leg with the router's hooks).
func fastFront(t *testing.T, app http.HandlerFunc) *httptest.Server {
	t.Helper()
	as := httptest.NewServer(app)
	t.Cleanup(as.Close)
	set, err := newSettings(&descend.Config{Index: 0, Key: "header:X-Olio-Key", Secret: "s3cr3t", RunDir: t.TempDir(),
		ForwardTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r := newRouter(0, set, slog.New(slog.DiscardHandler))
	port, _ := strconv.Atoi(as.URL[strings.LastIndexByte(as.URL, ':')+1:])
	inst := &instance{port: port, transport: appleg.New(port)}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.serveApp(w, req, inst)
	}))
	t.Cleanup(func() { front.Close(); inst.transport.CloseIdleConnections() })
	return front
}

// TestFastPathTimeout: an app that does not answer within the request timeout gets its
// request cancelled (its connection closed), and the client a 504.
func TestFastPathTimeout(t *testing.T) {
	cancelled := make(chan struct{})
	set, err := newSettings(&descend.Config{Index: 0, Key: "header:X-Olio-Key", Secret: "s3cr3t", RunDir: t.TempDir(),
		ForwardTimeout: time.Second, RequestTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := newRouter(0, set, slog.New(slog.DiscardHandler))
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-req.Context().Done():
			close(cancelled)
		case <-time.After(60 * time.Second): // bounded, so that a failing test ends
		}
	}))
	defer as.Close()
	port, _ := strconv.Atoi(as.URL[strings.LastIndexByte(as.URL, ':')+1:])
	inst := &instance{port: port, transport: appleg.New(port)}
	r.apps.setCurrent(inst)
	defer inst.transport.CloseIdleConnections()
	rec := httptest.NewRecorder()
	r.serveLocal(rec, httptest.NewRequest("GET", "/", nil), nil)
	if rec.Code != http.StatusGatewayTimeout {
		t.Errorf("status %d, want 504: %s", rec.Code, rec.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Error("the app's request was not cancelled")
	}
}

// rawApp is an app that answers each path with a canned answer, byte for byte, and closes
// the connection.
func rawApp(t *testing.T, answers map[string]string) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.WriteString(c, answers[req.URL.Path])
			}()
		}
	}()
	// An unstarted httptest.Server only carries the address.
	s := &httptest.Server{Listener: ln, URL: "http://" + ln.Addr().String()}
	t.Cleanup(func() { ln.Close() })
	return s
}

// A chunked body goes to the app chunked, with its trailer; a broken body is the client's
// fault (400), not the app's.
func TestEngineBodies(t *testing.T) {
	front := fastFront(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%q %v %q %v", b, r.TransferEncoding, r.Trailer.Get("X-Sum"), err)
	})
	addr := front.Listener.Addr().String()
	got := rawAnswer(t, addr, "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n")
	if want := `"hello" [chunked] "5" <nil>`; !strings.HasSuffix(got, want) {
		t.Errorf("chunked body: %q, want the app to read %s", got, want)
	}
	got = rawAnswer(t, addr, "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 400 ") {
		t.Errorf("a broken chunked body: %q, want 400", got)
	}
}

// rawAnswer writes raw on a new connection to addr and returns the answer, up to the close.
func rawAnswer(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, raw)
	b, _ := io.ReadAll(c)
	return string(b)
}
