package router

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

func TestLimitConnsZeroIsUnlimited(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if g := limitConns(ln, 0); g != ln {
		t.Errorf("limitConns(ln, 0) wrapped the listener")
	}
	if g := limitConns(ln, 3); g == ln {
		t.Errorf("limitConns(ln, 3) did not wrap the listener")
	}
}

func TestClientBodyMarksReadErrors(t *testing.T) {
	broken := errors.New("bad chunk")
	req, _ := http.NewRequest("POST", "http://x/", io.NopCloser(iotest.ErrReader(broken)))
	markBody(req)
	_, err := io.ReadAll(req.Body)
	var be *bodyError
	if !errors.As(err, &be) || !errors.Is(err, broken) {
		t.Fatalf("read error %v: not a bodyError wrapping the cause", err)
	}
	req, _ = http.NewRequest("POST", "http://x/", io.NopCloser(strings.NewReader("ok")))
	markBody(req)
	if b, err := io.ReadAll(req.Body); err != nil || string(b) != "ok" {
		t.Errorf("a good body read as %q, %v", b, err)
	}
	req, _ = http.NewRequest("GET", "http://x/", nil)
	markBody(req)
	if req.Body != nil {
		t.Errorf("markBody gave a bodiless request a body")
	}
}
