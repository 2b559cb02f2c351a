package mux

import (
	"encoding/binary"
	"net"
)

// yamux's wire header (see the yamux spec): version, type, flags, stream ID, length.
const (
	yamuxHeaderSize = 12
	yamuxVersion    = 0
	yamuxTypeData   = 0
)

// coalescingConn joins each yamux data frame's header and body into one write. yamux's
// send loop writes a frame's 12-byte header and its body separately; on a unix socket that
// is two syscalls, and on the reading side often two wakeups, for every frame. A data
// frame's header says how long its body is, so holding just those headers until their
// body arrives delays nothing: every other frame (window updates, pings, go-away, and data
// frames without a body) is written at once. yamux writes from one goroutine only.
//
// On a Pool's sessions it also notes every read that brings bytes (live): the peer is heard.
// On every session it follows the frames read (streams), to see which streams the peer ends.
type coalescingConn struct {
	net.Conn
	live    *liveness  // nil: not watched (a Listener's sessions)
	streams *streamSet // nil: not followed
	hdr     [yamuxHeaderSize]byte
	pending bool
	buf     []byte // header and a small body, copied together
}

// coalesceCopy is the largest body copied next to its header; a larger one goes out with
// it in one writev.
const coalesceCopy = 16 << 10

func (c *coalescingConn) Write(p []byte) (int, error) {
	if c.pending {
		c.pending = false
		if len(p) <= coalesceCopy {
			c.buf = append(append(c.buf[:0], c.hdr[:]...), p...)
			n, err := c.Conn.Write(c.buf)
			return max(n-yamuxHeaderSize, 0), err
		}
		bufs := net.Buffers{c.hdr[:], p}
		n, err := bufs.WriteTo(c.Conn)
		return max(int(n)-yamuxHeaderSize, 0), err
	}
	if len(p) == yamuxHeaderSize && p[0] == yamuxVersion && p[1] == yamuxTypeData &&
		binary.BigEndian.Uint32(p[8:12]) > 0 {
		copy(c.hdr[:], p)
		c.pending = true
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *coalescingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.live != nil {
		c.live.heard()
	}
	if c.streams != nil {
		if n > 0 {
			c.streams.scan(p[:n])
		}
		if err != nil {
			c.streams.endAll() // the session is over: so is every stream
		}
	}
	return n, err
}
