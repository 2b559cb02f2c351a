package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// httpConn is a minimal HTTP/1.1 keep-alive client for one connection: GET
// with the key header, read status, headers and the whole body (by
// Content-Length or chunked). On a 2-core machine the load generator shares
// the CPUs with what it measures, and net/http's client (two goroutines per
// connection, header maps, per-request allocations) costs about as much as a
// proxy; this one costs a fraction, so the setups get the CPU.
type httpConn struct {
	addr string // "127.0.0.1:P"
	c    net.Conn
	br   *bufio.Reader
	req  []byte
}

var errProtocol = errors.New("malformed HTTP response")

// maxBody bounds an answer's body.
const maxBody = 1 << 20

// get sends GET / with key and reads the answer's body into body. After an
// error the connection is closed and the next call dials again.
func (h *httpConn) get(key string, body *bytes.Buffer) (status int, err error) {
	if h.c == nil {
		c, err := net.DialTimeout("tcp", h.addr, 2*time.Second)
		if err != nil {
			return 0, err
		}
		h.c = c
		if h.br == nil {
			h.br = bufio.NewReaderSize(c, 16<<10)
		} else {
			h.br.Reset(c)
		}
	}
	status, keep, err := h.roundTrip(key, body)
	if err != nil || !keep {
		h.close()
	}
	return status, err
}

func (h *httpConn) close() {
	if h.c != nil {
		h.c.Close()
		h.c = nil
	}
}

func (h *httpConn) roundTrip(key string, body *bytes.Buffer) (status int, keep bool, err error) {
	if err := h.c.SetDeadline(time.Now().Add(requestTimeout)); err != nil {
		return 0, false, err
	}
	h.req = append(h.req[:0], "GET / HTTP/1.1\r\nHost: "...)
	h.req = append(h.req, h.addr...)
	h.req = append(h.req, "\r\n"+keyHeader+": "...)
	h.req = append(h.req, key...)
	h.req = append(h.req, "\r\n\r\n"...)
	if _, err := h.c.Write(h.req); err != nil {
		return 0, false, err
	}
	hd, err := h.readHead()
	if err != nil {
		return 0, false, err
	}
	keep = hd.keep
	body.Reset()
	switch {
	case hd.chunked:
		err = h.readChunked(body)
	case hd.length >= 0:
		_, err = io.CopyN(body, h.br, int64(hd.length))
	default: // body until the server closes
		_, err = body.ReadFrom(io.LimitReader(h.br, maxBody))
		keep = false
	}
	if err != nil {
		return 0, false, err
	}
	return hd.status, keep, nil
}

// head is what roundTrip needs of an answer's status line and header.
type head struct {
	status  int
	keep    bool // the connection stays open after the body
	length  int  // Content-Length, -1 when none
	chunked bool
}

// readHead reads an answer's status line and header.
func (h *httpConn) readHead() (head, error) {
	line, err := h.br.ReadSlice('\n')
	if err != nil {
		return head{}, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return head{}, fmt.Errorf("%w: status line %q", errProtocol, line)
	}
	hd := head{length: -1}
	hd.status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return head{}, fmt.Errorf("%w: status line %q", errProtocol, line)
	}
	hd.keep = line[7] == '1' // HTTP/1.1 keeps the connection unless told otherwise
	for {
		line, err = h.br.ReadSlice('\n')
		if err != nil {
			return head{}, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return hd, nil
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return head{}, fmt.Errorf("%w: header %q", errProtocol, line)
		}
		if err := hd.field(name, bytes.TrimSpace(value)); err != nil {
			return head{}, err
		}
	}
}

// field takes in one header field.
func (hd *head) field(name, value []byte) error {
	var err error
	switch {
	case bytes.EqualFold(name, []byte("Content-Length")):
		if hd.length, err = strconv.Atoi(string(value)); err != nil || hd.length < 0 || hd.length > maxBody {
			return fmt.Errorf("%w: Content-Length %q", errProtocol, value)
		}
	case bytes.EqualFold(name, []byte("Transfer-Encoding")):
		hd.chunked = bytes.EqualFold(value, []byte("chunked"))
	case bytes.EqualFold(name, []byte("Connection")):
		if bytes.EqualFold(value, []byte("close")) {
			hd.keep = false
		} else if bytes.EqualFold(value, []byte("keep-alive")) {
			hd.keep = true
		}
	}
	return nil
}

func (h *httpConn) readChunked(body *bytes.Buffer) error {
	for {
		line, err := h.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i] // chunk extensions
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 32)
		if err != nil || body.Len()+int(n) > maxBody {
			return fmt.Errorf("%w: chunk size %q", errProtocol, line)
		}
		if n == 0 {
			for { // trailers, up to the empty line
				line, err := h.br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if _, err := io.CopyN(body, h.br, int64(n)); err != nil {
			return err
		}
		if _, err := h.br.Discard(2); err != nil { // CRLF after the data
			return err
		}
	}
}
