package process

import (
	"bytes"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
)

// Closing a connection whose request framing was ambiguous (RFC 9112 §6.1, §6.3): a request
// with both Transfer-Encoding and Content-Length, or with Transfer-Encoding in HTTP/1.0,
// may be an attempt at request smuggling; a server may serve it (net/http frames it by the
// chunked encoding, or in HTTP/1.0 by Content-Length) but must close the connection after
// answering, so that nothing read after it is taken as a request.
//
// net/http deletes the header it does not use before a handler sees the request, so the
// public side's connections are watched as they are read (framingConn): a header block
// with both fields marks the connection, and ServeHTTP answers its requests with
// "Connection: close". The watch is by line, not a second HTTP parser: bytes of a body that
// look like such a header only close their own connection early, never keep one open.

// framingListener wraps every accepted connection in a framingConn.
type framingListener struct{ net.Listener }

func (l framingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &framingConn{passConn: passConn{c}}, nil
}

// framingConn is a public connection whose incoming bytes are scanned for ambiguous
// framing.
type framingConn struct {
	passConn
	scan framingScan
}

func (c *framingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.scan.scan(p[:n])
	return n, err
}

// ambiguous reports whether a request on c had ambiguous framing.
func (c *framingConn) ambiguous() bool { return c.scan.conflict.Load() }

// closeIfAmbiguous makes the answer to req close its connection when a request on it had
// ambiguous framing.
func closeIfAmbiguous(w http.ResponseWriter, req *http.Request) {
	if info, _ := req.Context().Value(connInfoKey{}).(*connInfo); info != nil && info.framing != nil && info.framing.ambiguous() {
		w.Header().Set("Connection", "close")
	}
}

// framingScan follows the lines of a connection's bytes. For each block of lines ended
// by an empty line (a request's header, as far as it can tell) it notes Content-Length,
// Transfer-Encoding and a request line of HTTP/1.0, and sets conflict when a block has
// Transfer-Encoding with either of the others.
type framingScan struct {
	head     [len("transfer-encoding:")]byte // the current line's first bytes
	nhead    int
	tail     [len(" HTTP/1.0\r")]byte // its last bytes
	ntail    int
	nline    int
	cl, te   bool
	http10   bool
	conflict atomic.Bool
}

func (s *framingScan) scan(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.add(p)
			return
		}
		s.add(p[:i])
		s.endLine()
		p = p[i+1:]
	}
}

// add appends seg to the current line.
func (s *framingScan) add(seg []byte) {
	if s.nhead < len(s.head) {
		s.nhead += copy(s.head[s.nhead:], seg)
	}
	if len(seg) >= len(s.tail) {
		s.ntail = copy(s.tail[:], seg[len(seg)-len(s.tail):])
	} else {
		keep := min(s.ntail, len(s.tail)-len(seg))
		copy(s.tail[:], s.tail[s.ntail-keep:s.ntail])
		s.ntail = keep + copy(s.tail[keep:], seg)
	}
	s.nline += len(seg)
}

func (s *framingScan) endLine() {
	head, tail := s.head[:s.nhead], s.tail[:s.ntail]
	empty := s.nline == 0 || (s.nline == 1 && tail[0] == '\r')
	s.nhead, s.ntail, s.nline = 0, 0, 0
	switch {
	case empty:
		if s.te && (s.cl || s.http10) {
			s.conflict.Store(true)
		}
		s.cl, s.te, s.http10 = false, false, false
	case hasPrefixFold(head, "content-length:"):
		s.cl = true
	case hasPrefixFold(head, "transfer-encoding:"):
		s.te = true
	case bytes.HasSuffix(bytes.TrimSuffix(tail, []byte("\r")), []byte(" HTTP/1.0")):
		s.http10 = true
	}
}

// hasPrefixFold reports whether b begins with prefix, in ASCII case-insensitive comparison.
func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && strings.EqualFold(string(b[:len(prefix)]), prefix)
}
