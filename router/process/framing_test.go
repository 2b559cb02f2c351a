package process

import (
	"strings"
	"testing"
)

func TestFramingScan(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     bool
	}{
		{"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false},
		{"content-length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", false},
		{"both", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"both, other order and case", "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nHost: x\r\nCONTENT-LENGTH: 5\r\n\r\n", true},
		{"both, bare LF", "POST / HTTP/1.1\nContent-Length: 5\nTransfer-Encoding: chunked\n\n", true},
		{"HTTP/1.0 with TE", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"HTTP/1.0 with CL", "POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello", false},
		{"in two requests", "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
		{"second request", "GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", true},
	} {
		// Byte by byte, in one piece, and in pieces of 7: the result does not depend on how
		// the reads split the stream.
		for _, size := range []int{1, len(tc.in), 7} {
			var s framingScan
			for in := tc.in; in != ""; {
				k := min(size, len(in))
				s.scan([]byte(in[:k]))
				in = in[k:]
			}
			if g := s.conflict.Load(); g != tc.want {
				t.Errorf("%s (reads of %d): ambiguous %v, want %v", tc.name, size, g, tc.want)
			}
		}
	}
	var s framingScan
	s.scan([]byte("POST / HTTP/1.1\r\nX-Long: " + strings.Repeat("y", 1<<16) + "\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"))
	if !s.conflict.Load() {
		t.Errorf("not found after a long header line")
	}
}

// BenchmarkFramingScan is the watch's cost for a typical request header.
func BenchmarkFramingScan(b *testing.B) {
	req := []byte("GET /api/items?id=42 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\nX-Olio-Key: user-12345\r\nAccept-Encoding: gzip\r\n\r\n")
	var s framingScan
	b.SetBytes(int64(len(req)))
	for b.Loop() {
		s.scan(req)
	}
}
