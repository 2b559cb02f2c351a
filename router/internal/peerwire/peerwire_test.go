package peerwire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"
)

// FuzzAnswerHead: an answer head of any bytes decodes to a status a ResponseWriter
// takes (three digits, not an interim one) and a length of -1 or more, or to an error.
func FuzzAnswerHead(f *testing.F) {
	f.Add(answerHead(200, http.Header{"X-A": {"1"}, "Content-Length": {"4"}}, nil, 4))
	f.Add(answerHead(204, http.Header{"X-A": {"1"}, "Trailer": {"X-T"}}, []string{"X-T"}, -1))
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 1})             // status 0
	f.Add([]byte{0xe8, 0x07, 0, 0, 1})    // status 1000
	f.Add([]byte{0x67, 0, 0, 1})          // status 103: an interim one
	f.Add([]byte{0xc8, 0x01, 0, 0, 0x03}) // length -2
	f.Fuzz(func(t *testing.T, p []byte) {
		code, h, _, length, err := DecodeAnswerHead(string(p), nil)
		if err != nil {
			return
		}
		if !finalStatus(uint64(code)) || code < 100 || code > 999 || length < -1 || h == nil {
			t.Errorf("decoded status %d, length %d, header %v", code, length, h)
		}
	})
}

// FuzzInterim: an interim answer of any bytes decodes to a 1xx status (not 101) or an
// error; what decodes encodes back to the same answer.
func FuzzInterim(f *testing.F) {
	f.Add(AppendInterim(nil, 103, http.Header{"Link": {"</a.css>; rel=preload"}})[HeaderSize:])
	f.Add(AppendInterim(nil, 100, nil)[HeaderSize:])
	f.Add(AppendInterim(nil, 101, nil)[HeaderSize:])
	f.Add(AppendInterim(nil, 200, nil)[HeaderSize:])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		code, h, err := DecodeInterim(string(p))
		if err != nil {
			return
		}
		if !interimStatus(code) {
			t.Fatalf("decoded interim status %d", code)
		}
		code2, h2, err := DecodeInterim(string(AppendInterim(nil, code, h)[HeaderSize:]))
		if err != nil || code2 != code || !reflect.DeepEqual(h, h2) {
			t.Errorf("round trip: %d %v, then %d %v (%v)", code, h, code2, h2, err)
		}
	})
}

// FuzzHello: a versioned hello of any bytes decodes to a version and a secret or an
// error; what decodes encodes back to the same hello.
func FuzzHello(f *testing.F) {
	f.Add(AppendVersionHello(nil, Version, "s3cr3t")[HeaderSize:])
	f.Add(AppendVersionHello(nil, 1<<31, "")[HeaderSize:])
	f.Add([]byte("s3cr3t")) // a bare hello
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		v, secret, err := DecodeVersionHello(string(p))
		if err != nil {
			return
		}
		if v < 0 || v > maxVersion {
			t.Fatalf("decoded version %d", v)
		}
		v2, secret2, err := DecodeVersionHello(string(AppendVersionHello(nil, v, secret)[HeaderSize:]))
		if err != nil || v2 != v || secret2 != secret {
			t.Errorf("round trip: %d %q, then %d %q (%v)", v, secret, v2, secret2, err)
		}
	})
}

// FuzzBody: a message's body frames of any bytes read to an end or an error, never a
// panic, and never more bytes than the data frames carried.
func FuzzBody(f *testing.F) {
	var ok []byte
	ok = AppendFrameHeader(ok, FrameData, 5)
	ok = append(ok, "hello"...)
	ok = AppendEnd(ok, http.Header{"X-Sum": {"1"}})
	f.Add(ok)
	f.Add(AppendEndType(nil, FrameEndClose, nil))
	f.Add(AppendFrameHeader(nil, FrameData, 1<<31))
	f.Add(AppendFrameHeader(nil, FrameResponse, 0))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		var trailer http.Header
		b := &Body{R: bufio.NewReader(bytes.NewReader(p)), Trailer: &trailer}
		got, err := io.ReadAll(b)
		if len(got) > len(p) {
			t.Fatalf("read %d bytes from %d", len(got), len(p))
		}
		if err == nil && !b.Complete() {
			t.Errorf("a body read to its end without its end frame")
		}
	})
}

// answerHead is the payload of an answer head, as the owner writes it: the status, the
// header, the trailers announced and the content length (-1: unknown).
func answerHead(code int, h http.Header, trailers []string, length int64) []byte {
	b := binary.AppendUvarint(nil, uint64(code))
	b = AppendHeader(b, h, nil)
	b = AppendNames(b, trailers)
	return binary.AppendVarint(b, length)
}

// FuzzRequestHead: a request head of any bytes decodes to a request head or an error, never
// a panic; what decodes encodes back to the same head.
func FuzzRequestHead(f *testing.F) {
	f.Add(requestHead(RequestHead{Flags: Timed, Method: "POST", URI: "/a?b=c", Host: "h.example", Length: -1,
		Header: http.Header{"X-Many": {"1", "2"}}, Trailer: http.Header{"X-Sum": nil}}))
	f.Add(requestHead(RequestHead{Method: "GET", URI: "/", Header: http.Header{}}))
	f.Add([]byte{})
	f.Add([]byte{0, 1, 'G', 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, p []byte) {
		rh, err := DecodeRequestHead(string(p))
		if err != nil {
			return
		}
		if rh.Header == nil {
			t.Fatalf("decoded a nil header from %q", p)
		}
		again, err := DecodeRequestHead(string(requestHead(rh)))
		if err != nil || !reflect.DeepEqual(again, rh) {
			t.Errorf("round trip: %+v, then %+v (%v)", rh, again, err)
		}
	})
}

// requestHead is the payload of the request head r.
func requestHead(r RequestHead) []byte {
	b := binary.AppendUvarint(nil, r.Flags)
	b = AppendString(b, r.Method)
	b = AppendString(b, r.URI)
	b = AppendString(b, r.Host)
	b = binary.AppendVarint(b, r.Length)
	b = AppendHeader(b, r.Header, nil)
	var names []string
	for k := range r.Trailer {
		names = append(names, k)
	}
	return AppendNames(b, names)
}

// TestSpeaks: a router speaks its own version and the one before it, never below version 1.
func TestSpeaks(t *testing.T) {
	for _, tc := range []struct {
		mine, v int
		want    bool
	}{
		{Version, Version, true}, {Version, Version - 1, true}, {Version, Version + 1, false},
		{Version, Version - 2, false}, {VersionBare, VersionBare, true}, {VersionBare, 0, false},
	} {
		if got := Speaks(tc.mine, tc.v); got != tc.want {
			t.Errorf("Speaks(%d, %d) = %v, want %v", tc.mine, tc.v, got, tc.want)
		}
	}
}

// A header block decodes with every value, a field's repeated values in order, into the
// header given; the values share one array, and appending to one leaves the others as they
// were.
func TestDecodeHeaderValues(t *testing.T) {
	sent := http.Header{"X-A": {"1", "2"}, "X-B": {"3"}, "X-C": {"4"}}
	dst := http.Header{"X-Old": {"0"}, "X-B": {"pre"}}
	_, h, _, _, err := DecodeAnswerHead(string(answerHead(200, sent, nil, 0)), dst)
	if err != nil {
		t.Fatal(err)
	}
	want := http.Header{"X-A": {"1", "2"}, "X-B": {"pre", "3"}, "X-C": {"4"}, "X-Old": {"0"}}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("decoded %v, want %v", h, want)
	}
	h.Add("X-C", "5")
	h["X-A"] = append(h["X-A"], "6")
	want["X-C"], want["X-A"] = []string{"4", "5"}, []string{"1", "2", "6"}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("after appends: %v, want %v", h, want)
	}
}

// An end frame without trailers leaves a body's Trailer nil (none announced); one with
// trailers fills it.
func TestBodyEndTrailers(t *testing.T) {
	for _, tr := range []http.Header{nil, {"X-T": {"v"}}} {
		var trailer http.Header
		b := &Body{R: bufio.NewReader(bytes.NewReader(AppendEnd(nil, tr))), Trailer: &trailer}
		if n, err := b.Read(make([]byte, 1)); n != 0 || err != io.EOF || !b.Complete() {
			t.Fatalf("read %d, %v; want the end", n, err)
		}
		if !reflect.DeepEqual(trailer, tr) {
			t.Errorf("trailer %v, want %v", trailer, tr)
		}
	}
}

// Complete may be asked while a Read waits on another goroutine (a handler that answered
// before its body had come, whose body's reader still waits on the stream): it says the body
// is not complete, and the race detector sees no race.
func TestBodyCompleteDuringRead(t *testing.T) {
	pr, pw := io.Pipe()
	b := &Body{R: bufio.NewReader(pr)}
	read := make(chan error, 1)
	go func() {
		_, err := b.Read(make([]byte, 10))
		read <- err
	}()
	var h [HeaderSize]byte
	pw.Write(AppendFrameHeader(h[:0], FrameData, 4)) // the reader now waits for the data
	if b.Complete() || b.Closing() {
		t.Error("a body whose end frame has not come says it is complete")
	}
	pw.CloseWithError(io.ErrUnexpectedEOF)
	// Asked again and again as the reader fails (what the owner's serving loop does after a
	// handler returns): each answer must be a clean "not complete".
	deadline := time.After(10 * time.Second)
	for {
		if b.Complete() {
			t.Fatal("a body whose stream broke says it is complete")
		}
		select {
		case <-read:
			return
		case <-deadline:
			t.Fatal("the body's Read did not return within 10s of its stream's end")
		default:
		}
	}
}
