package process

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// publicWrapper is what net/http and the handoff look for on the public connection.
type publicWrapper interface {
	net.Conn
	CloseWrite() error
	io.ReaderFrom
	syscall.Conn
}

// The wrappers of the public connection, alone and nested as a connection handed back
// after a failed handoff is (framing over prefix over framing over a --max-conns slot).
var publicWrappers = map[string]func(net.Conn) net.Conn{
	"framingConn": func(c net.Conn) net.Conn { return &framingConn{passConn: passConn{c}} },
	"prefixConn":  func(c net.Conn) net.Conn { return newPrefixConn(c, nil) },
	"limitedConn": func(c net.Conn) net.Conn { return &limitedConn{passConn: passConn{c}, release: func() {}} },
	"nested": func(c net.Conn) net.Conn {
		lc := &limitedConn{passConn: passConn{c}, release: func() {}}
		return &framingConn{passConn: passConn{newPrefixConn(&framingConn{passConn: passConn{lc}}, nil)}}
	},
}

// TestPublicWrappersPassOn: every wrapper of the public connection half-closes it (the
// peer reads the answer, then a clean EOF), writes a file through ReadFrom, and gives its
// socket's descriptor.
func TestPublicWrappersPassOn(t *testing.T) {
	file := filepath.Join(t.TempDir(), "answer")
	if err := os.WriteFile(file, []byte(strings.Repeat("f", 100000)), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, wrap := range publicWrappers {
		client, server := clientConn(t)
		wc, ok := wrap(server).(publicWrapper)
		if !ok {
			t.Errorf("%s hides CloseWrite, ReadFrom or SyscallConn", name)
			continue
		}
		raw, err := wc.SyscallConn()
		if err != nil {
			t.Errorf("%s: SyscallConn: %v", name, err)
		} else {
			var fd uintptr
			raw.Control(func(f uintptr) { fd = f })
			if fd == 0 {
				t.Errorf("%s: no descriptor", name)
			}
		}
		if !isSocket(wc) {
			t.Errorf("%s: isSocket false for a TCP connection", name)
		}
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		n, err := wc.ReadFrom(f)
		f.Close()
		if err != nil || n != 100000 {
			t.Errorf("%s: ReadFrom wrote %d bytes, %v", name, n, err)
		}
		if err := wc.CloseWrite(); err != nil {
			t.Errorf("%s: CloseWrite: %v", name, err)
		}
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(client) // ends at the FIN, or fails at the deadline
		if err != nil || len(got) != 100000 {
			t.Errorf("%s: the peer read %d bytes, then %v; want 100000 and a clean EOF", name, len(got), err)
		}
	}
}

// TestPublicWrappersNotSocket: over a connection that is not a socket, the wrappers say so
// instead of pretending.
func TestPublicWrappersNotSocket(t *testing.T) {
	for name, wrap := range publicWrappers {
		a, b := net.Pipe()
		wc := wrap(a).(publicWrapper)
		if _, err := wc.SyscallConn(); !errors.Is(err, errNotSocket) {
			t.Errorf("%s over a pipe: SyscallConn error %v, want errNotSocket", name, err)
		}
		if isSocket(wc) {
			t.Errorf("%s over a pipe: isSocket true", name)
		}
		if err := wc.CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("%s over a pipe: CloseWrite error %v, want ErrUnsupported", name, err)
		}
		go io.Copy(io.Discard, b)
		if n, err := wc.ReadFrom(strings.NewReader("hello")); n != 5 || err != nil {
			t.Errorf("%s over a pipe: ReadFrom wrote %d, %v", name, n, err)
		}
		a.Close()
		b.Close()
	}
}

// TestLimitListener: past its bound Accept waits until a connection closes; Close ends a
// waiting Accept.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := limitConns(inner, 1)
	for range 2 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	first.Close()
	var second net.Conn
	select {
	case second = <-accepted:
		if second == nil {
			t.Fatal("the second Accept failed after the first connection closed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second Accept did not return within 10s of the first connection's close")
	}
	go func() {
		c, err := ln.Accept() // waits for second's slot
		if err == nil {
			c.Close()
		}
		accepted <- c
	}()
	ln.Close()
	select {
	case c := <-accepted:
		if c != nil {
			t.Errorf("Accept after Close returned a connection")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end an Accept waiting for a slot within 10s")
	}
	second.Close()
}
