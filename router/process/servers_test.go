package process

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"
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

func TestAnswerTimeout(t *testing.T) {
	req, _ := http.NewRequest("GET", "http://x/", nil)
	timed, stop := withAnswerTimeout(req, time.Millisecond)
	defer stop()
	waitDone(t, timed.Context().Done(), 5*time.Second, "the answer timeout of 1ms to end the context")
	if err := timedOut(timed, context.Canceled); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timedOut after the answer timeout = %v, want a DeadlineExceeded", err)
	}

	answeredReq, stop2 := withAnswerTimeout(req, 50*time.Millisecond)
	defer stop2()
	answered(&http.Response{Request: answeredReq})
	select {
	case <-answeredReq.Context().Done():
		t.Errorf("the answer timeout fired after the answer came")
	case <-time.After(200 * time.Millisecond): // a deadline in the past for a 50ms timer
	}
	if err := timedOut(answeredReq, io.EOF); err != io.EOF {
		t.Errorf("timedOut of an answered request = %v, want the error itself", err)
	}
}
