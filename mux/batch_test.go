package mux

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// gatedConn holds each Write until the test lets it through, and records it.
type gatedConn struct {
	net.Conn
	entered chan struct{} // a Write began
	gate    chan error    // what the held Write returns
	mu      sync.Mutex
	writes  [][]byte
}

func (g *gatedConn) Write(p []byte) (int, error) {
	g.entered <- struct{}{}
	err := <-g.gate
	g.mu.Lock()
	g.writes = append(g.writes, append([]byte(nil), p...))
	g.mu.Unlock()
	return len(p), err
}

// Frames written while the socket is busy go out together, in order, in the next write; a
// failed write fails every later one.
func TestBatchingConn(t *testing.T) {
	g := &gatedConn{entered: make(chan struct{}), gate: make(chan error)}
	c := newBatchingConn(g)
	c.Write([]byte("a"))
	<-g.entered // "a" is on the socket
	c.Write([]byte("b"))
	c.Write([]byte("c"))
	g.gate <- nil
	<-g.entered // the batch of the two
	g.gate <- nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		idle := !c.busy
		c.mu.Unlock()
		if idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the flush did not end")
		}
		time.Sleep(time.Millisecond) // polling a condition, not a wait for a guess
	}
	if g, e := bytes.Join(g.writes, []byte("|")), []byte("a|bc"); !bytes.Equal(g, e) {
		t.Errorf("writes %q, want %q", g, e)
	}
	broken := errors.New("broken")
	c.Write([]byte("d"))
	<-g.entered
	g.gate <- broken
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := c.Write([]byte("e")); errors.Is(err, broken) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a write after a failed one did not fail")
		}
		select { // a write of "e" that raced the failure is on the socket: let it fail too
		case <-g.entered:
			g.gate <- broken
		case <-time.After(time.Millisecond):
		}
	}
}
