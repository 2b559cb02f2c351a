package process

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// FuzzPeerRequestHead: a request head of any bytes decodes to a request or an error, never
// a panic; a head the forwarder builds decodes to the request it was built from.
func FuzzPeerRequestHead(f *testing.F) {
	req := httptest.NewRequest("POST", "/a/b?c=d&e;f=g", strings.NewReader("x"))
	req.Header.Add("X-Many", "1")
	req.Header.Add("X-Many", "2")
	head := appendRequestHead(nil, req, true, "")
	f.Add(head[frameHeaderSize:])
	f.Add([]byte{})
	f.Add([]byte{0, 1, 'G', 0xff, 0xff, 0xff, 0xff, 0x0f})
	a, b := net.Pipe()
	f.Cleanup(func() { a.Close(); b.Close() })
	c := &peerConn{c: a, br: bufio.NewReader(strings.NewReader(string(appendEnd(nil, nil))))}
	f.Fuzz(func(t *testing.T, p []byte) {
		c.br.Reset(strings.NewReader(string(appendEnd(nil, nil))))
		got, _, err := c.readRequest(string(p))
		if err != nil || string(p) != string(head[frameHeaderSize:]) {
			return
		}
		if got.Method != "POST" || got.URL.RawQuery != "c=d" || got.ContentLength != 1 ||
			strings.Join(got.Header["X-Many"], ",") != "1,2" || got.Header.Get("X-Forwarded-For") != "192.0.2.1" {
			t.Errorf("decoded %s %s (%d bytes) %v", got.Method, got.URL, got.ContentLength, got.Header)
		}
	})
}

// FuzzPeerAnswerHead: an answer head of any bytes decodes to a status a ResponseWriter
// takes (three digits, not an interim one) and a length of -1 or more, or to an error.
func FuzzPeerAnswerHead(f *testing.F) {
	f.Add(encodeAnswer(f, 200, "X-A", "1", "body", "").head)
	f.Add(encodeAnswer(f, 204, "X-A", "1", "", "t").head)
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 1})             // status 0
	f.Add([]byte{0xe8, 0x07, 0, 0, 1})    // status 1000
	f.Add([]byte{0x67, 0, 0, 1})          // status 103: an interim one
	f.Add([]byte{0xc8, 0x01, 0, 0, 0x03}) // length -2
	f.Fuzz(func(t *testing.T, p []byte) {
		code, h, _, length, err := decodeAnswerHead(string(p), nil)
		if err != nil {
			return
		}
		if !finalStatus(uint64(code)) || code < 100 || code > 999 || length < -1 || h == nil {
			t.Errorf("decoded status %d, length %d, header %v", code, length, h)
		}
	})
}

// FuzzPeerInterim: an interim answer of any bytes decodes to a 1xx status (not 101) or an
// error; what decodes encodes back to the same answer.
func FuzzPeerInterim(f *testing.F) {
	f.Add(appendInterim(nil, 103, http.Header{"Link": {"</a.css>; rel=preload"}})[frameHeaderSize:])
	f.Add(appendInterim(nil, 100, nil)[frameHeaderSize:])
	f.Add(appendInterim(nil, 101, nil)[frameHeaderSize:])
	f.Add(appendInterim(nil, 200, nil)[frameHeaderSize:])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		code, h, err := decodeInterim(string(p))
		if err != nil {
			return
		}
		if !interimStatus(code) {
			t.Fatalf("decoded interim status %d", code)
		}
		code2, h2, err := decodeInterim(string(appendInterim(nil, code, h)[frameHeaderSize:]))
		if err != nil || code2 != code || !reflect.DeepEqual(h, h2) {
			t.Errorf("round trip: %d %v, then %d %v (%v)", code, h, code2, h2, err)
		}
	})
}

// FuzzPeerHello: a versioned hello of any bytes decodes to a version and a secret or an
// error; what decodes encodes back to the same hello.
func FuzzPeerHello(f *testing.F) {
	f.Add(appendVersionHello(nil, peerVersion, "s3cr3t")[frameHeaderSize:])
	f.Add(appendVersionHello(nil, 1<<31, "")[frameHeaderSize:])
	f.Add([]byte("s3cr3t")) // a bare hello
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		v, secret, err := decodeVersionHello(string(p))
		if err != nil {
			return
		}
		if v < 0 || v > maxVersion {
			t.Fatalf("decoded version %d", v)
		}
		v2, secret2, err := decodeVersionHello(string(appendVersionHello(nil, v, secret)[frameHeaderSize:]))
		if err != nil || v2 != v || secret2 != secret {
			t.Errorf("round trip: %d %q, then %d %q (%v)", v, secret, v2, secret2, err)
		}
	})
}

// FuzzPeerBody: a message's body frames of any bytes read to an end or an error, never a
// panic, and never more bytes than the data frames carried.
func FuzzPeerBody(f *testing.F) {
	var ok []byte
	ok = appendFrameHeader(ok, frameData, 5)
	ok = append(ok, "hello"...)
	ok = appendEnd(ok, http.Header{"X-Sum": {"1"}})
	f.Add(ok)
	f.Add(appendEndType(nil, frameEndClose, nil))
	f.Add(appendFrameHeader(nil, frameData, 1<<31))
	f.Add(appendFrameHeader(nil, frameResponse, 0))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		var trailer http.Header
		b := &frameBody{br: bufio.NewReader(bytes.NewReader(p)), trailer: &trailer}
		got, err := io.ReadAll(b)
		if len(got) > len(p) {
			t.Fatalf("read %d bytes from %d", len(got), len(p))
		}
		if err == nil && !b.complete() {
			t.Errorf("a body read to its end without its end frame")
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
		typ, n, err := readFrameHeader(br)
		if err != nil || typ != frameInterim {
			t.Fatalf("first frame %q, %v", typ, err)
		}
		p, _ := readPayload(br, n, maxResponseHead)
		if ic, ih, err := decodeInterim(p); err != nil || ic != 103 || ih.Get("Link") != "<x>" {
			t.Fatalf("interim %d %v %v", ic, ih, err)
		}
		if typ, n, err = readFrameHeader(br); err != nil || typ != frameResponse {
			t.Fatalf("second frame %q, %v", typ, err)
		}
		p, _ = readPayload(br, n, maxResponseHead)
		gotCode, h, announced, length, err := decodeAnswerHead(p, nil)
		if err != nil || gotCode != code {
			t.Fatalf("head: %d (%v), want %d", gotCode, err, code)
		}
		if got := h["X-F-"+key]; len(got) != 1 || got[0] != value {
			t.Errorf("header %q: %q, want %q", "X-F-"+key, got, value)
		}
		fb := &frameBody{br: br, trailer: &announced}
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
	c := &peerConn{bw: bufio.NewWriter(&buf), version: peerVersion}
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
	_, n, _ := readFrameHeader(br)
	br.Discard(n)
	_, n, _ = readFrameHeader(br)
	head, _ := readPayload(br, n, maxResponseHead)
	return encoded{wire: wire, head: []byte(head)}
}
