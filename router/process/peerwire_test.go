package process

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/olio-dev/olio/router/internal/peerwire"
)

// FuzzPeerRequestHead: a request head of any bytes decodes to a request or an error, never
// a panic; a head the forwarder builds decodes to the request it was built from.
func FuzzPeerRequestHead(f *testing.F) {
	req := httptest.NewRequest("POST", "/a/b?c=d&e;f=g", strings.NewReader("x"))
	req.Header.Add("X-Many", "1")
	req.Header.Add("X-Many", "2")
	head := appendRequestHead(nil, req, true, "")
	f.Add(head[peerwire.HeaderSize:])
	f.Add([]byte{})
	f.Add([]byte{0, 1, 'G', 0xff, 0xff, 0xff, 0xff, 0x0f})
	a, b := net.Pipe()
	f.Cleanup(func() { a.Close(); b.Close() })
	c := &peerConn{c: a, br: bufio.NewReader(strings.NewReader(string(peerwire.AppendEnd(nil, nil))))}
	f.Fuzz(func(t *testing.T, p []byte) {
		c.br.Reset(strings.NewReader(string(peerwire.AppendEnd(nil, nil))))
		got, _, err := c.readRequest(context.Background(), string(p))
		if err != nil || string(p) != string(head[peerwire.HeaderSize:]) {
			return
		}
		if got.Method != "POST" || got.URL.RawQuery != "c=d" || got.ContentLength != 1 ||
			strings.Join(got.Header["X-Many"], ",") != "1,2" || got.Header.Get("X-Forwarded-For") != "192.0.2.1" {
			t.Errorf("decoded %s %s (%d bytes) %v", got.Method, got.URL, got.ContentLength, got.Header)
		}
	})
}

// FuzzPeerRoundTrip: an answer the owner's writer encodes (an interim answer, the head, the
// body, the trailers) decodes to the same answer.
func FuzzPeerRoundTrip(f *testing.F) {
	f.Add(uint16(0), "A", "1", "hello", "sum")
	f.Add(uint16(4), "Many", "", "", "")
	f.Add(uint16(104), "B", "v", strings.Repeat("x", 70000), "")
	f.Fuzz(func(t *testing.T, status uint16, key, value, body, trailer string) {
		code := 200 + int(status)%800
		e := encodeAnswer(t, code, "X-F-"+key, value, body, trailer)
		br := bufio.NewReader(bytes.NewReader(e.wire))
		typ, n, err := peerwire.ReadFrameHeader(br)
		if err != nil || typ != peerwire.FrameInterim {
			t.Fatalf("first frame %q, %v", typ, err)
		}
		p, _ := peerwire.ReadPayload(br, n, peerwire.MaxResponseHead)
		if ic, ih, err := peerwire.DecodeInterim(p); err != nil || ic != 103 || ih.Get("Link") != "<x>" {
			t.Fatalf("interim %d %v %v", ic, ih, err)
		}
		if typ, n, err = peerwire.ReadFrameHeader(br); err != nil || typ != peerwire.FrameResponse {
			t.Fatalf("second frame %q, %v", typ, err)
		}
		p, _ = peerwire.ReadPayload(br, n, peerwire.MaxResponseHead)
		gotCode, h, announced, length, err := peerwire.DecodeAnswerHead(p, nil)
		if err != nil || gotCode != code {
			t.Fatalf("head: %d (%v), want %d", gotCode, err, code)
		}
		if got := h["X-F-"+key]; len(got) != 1 || got[0] != value {
			t.Errorf("header %q: %q, want %q", "X-F-"+key, got, value)
		}
		fb := &peerwire.Body{R: br, Trailer: &announced}
		got, err := io.ReadAll(fb)
		if err != nil {
			t.Fatalf("body: %v", err)
		}
		want := body
		if code == http.StatusNoContent || code == http.StatusNotModified {
			want = ""
		}
		if string(got) != want {
			t.Errorf("body: %d bytes, want %d", len(got), len(want))
		}
		if length != -1 && length != int64(len(want)) {
			t.Errorf("length %d, body %d bytes", length, len(want))
		}
		if trailer != "" && announced.Get("X-T") != trailer {
			t.Errorf("trailer %q, want %q", announced.Get("X-T"), trailer)
		}
	})
}

// encoded is an answer as the owner's writer puts it on the wire.
type encoded struct {
	wire []byte // every frame
	head []byte // the answer head's payload
}

// encodeAnswer encodes, with a peerWriter on a version 2 stream, a 103 with a Link field,
// then an answer of code with the field key: value, body and, unless empty, the trailer X-T.
func encodeAnswer(t testing.TB, code int, key, value, body, trailer string) encoded {
	var buf bytes.Buffer
	c := &peerConn{bw: bufio.NewWriter(&buf), version: peerwire.Version}
	w := &peerWriter{c: c, header: http.Header{}}
	w.header.Set("Link", "<x>")
	w.WriteHeader(http.StatusEarlyHints)
	w.header.Del("Link")
	w.header[key] = []string{value}
	if trailer != "" {
		w.header.Set("Trailer", "X-T")
	}
	w.WriteHeader(code)
	io.WriteString(w, body)
	if trailer != "" {
		w.header.Set("X-T", trailer)
	}
	if err := w.finish(true); err != nil {
		t.Fatal(err)
	}
	wire := buf.Bytes()
	// The head follows the interim answer.
	br := bufio.NewReader(bytes.NewReader(wire))
	_, n, _ := peerwire.ReadFrameHeader(br)
	br.Discard(n)
	_, n, _ = peerwire.ReadFrameHeader(br)
	head, _ := peerwire.ReadPayload(br, n, peerwire.MaxResponseHead)
	return encoded{wire: wire, head: []byte(head)}
}
