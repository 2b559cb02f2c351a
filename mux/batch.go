package mux

import (
	"net"
	"sync"
)

// batchingConn lets yamux's one writer go on while the socket is busy: the frames written
// while a write is in flight are joined and go out together in the next one. Under load
// that is several frames per syscall, and per wakeup of the peer's reader; a frame written
// to an idle connection costs a hand-off to the goroutine that writes it.
type batchingConn struct {
	net.Conn

	mu    sync.Mutex
	full  sync.Cond // signalled when the batch is written
	buf   []byte    // frames waiting for the socket
	spare []byte    // the buffer of the previous batch, for the next
	busy  bool      // a flush goroutine runs
	err   error     // the socket's write failed: every later Write fails
}

// maxBatch bounds the bytes waiting: past it, Write waits for the socket.
const maxBatch = 1 << 20

func newBatchingConn(c net.Conn) *batchingConn {
	b := &batchingConn{Conn: c}
	b.full.L = &b.mu
	return b
}

func (c *batchingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && len(c.buf) >= maxBatch {
		c.full.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.buf = append(c.buf, p...)
	start := !c.busy
	c.busy = true
	c.mu.Unlock()
	if start {
		go c.flush()
	}
	return len(p), nil
}

// flush writes batches until none is waiting.
func (c *batchingConn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.buf) > 0 && c.err == nil {
		b := c.buf
		c.buf = c.spare[:0]
		c.mu.Unlock()
		_, err := c.Conn.Write(b)
		c.mu.Lock()
		if cap(b) <= maxBatch {
			c.spare = b[:0]
		}
		if err != nil {
			c.err = err
		}
		c.full.Broadcast()
	}
	c.busy = false
}

// wrapConn is c as yamux writes to it: each data frame's header joined to its body, and
// with batch, frames joined while the socket is busy.
func wrapConn(c net.Conn, batch bool) net.Conn {
	if batch {
		c = newBatchingConn(c)
	}
	return &coalescingConn{Conn: c}
}
