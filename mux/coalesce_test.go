package mux

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

// writeCounter records each Write as one syscall would see it.
type writeCounter struct {
	net.Conn
	writes [][]byte
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

func header(typ uint8, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[0], h[1] = yamuxVersion, typ
	binary.BigEndian.PutUint32(h[4:8], 3)
	binary.BigEndian.PutUint32(h[8:12], length)
	return h
}

func TestCoalescingConn(t *testing.T) {
	for _, size := range []int{5, coalesceCopy + 1} {
		w := &writeCounter{}
		c := &coalescingConn{Conn: w}
		body := bytes.Repeat([]byte("b"), size)
		hdr := header(yamuxTypeData, uint32(size))
		if n, err := c.Write(hdr); n != len(hdr) || err != nil {
			t.Fatalf("header write: %d, %v", n, err)
		}
		if len(w.writes) != 0 {
			t.Fatalf("a data header went out before its body")
		}
		if n, err := c.Write(body); n != size || err != nil {
			t.Fatalf("body write: %d, %v", n, err)
		}
		got := bytes.Join(w.writes, nil)
		if !bytes.Equal(got, append(hdr, body...)) {
			t.Errorf("size %d: wire bytes differ", size)
		}
		if size <= coalesceCopy && len(w.writes) != 1 {
			t.Errorf("size %d: %d writes, want 1", size, len(w.writes))
		}
	}
	// Frames without a body go out at once.
	for _, hdr := range [][]byte{header(1, 65536), header(yamuxTypeData, 0), header(2, 0)} {
		w := &writeCounter{}
		c := &coalescingConn{Conn: w}
		c.Write(hdr)
		if len(w.writes) != 1 || !bytes.Equal(w.writes[0], hdr) {
			t.Errorf("header %x was held back", hdr)
		}
	}
}
