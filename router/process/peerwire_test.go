package process

import (
	"bufio"
	"net"
	"net/http/httptest"
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
