package descend

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Conn sends and receives messages over one stream socket. Send is safe for concurrent
// use; Recv is meant for one reading goroutine.
type Conn struct {
	c  net.Conn
	r  *bufio.Reader
	mu sync.Mutex // serialises Send
}

// NewConn wraps an established stream connection.
func NewConn(c net.Conn) *Conn {
	return &Conn{c: c, r: bufio.NewReader(c)}
}

// FileConn wraps an inherited socket file (a router's end of the pair). The file is not
// needed afterwards and is closed.
func FileConn(f *os.File) (*Conn, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("descend: inherited socket: %w", err)
	}
	return NewConn(c), nil
}

// Pair makes a connected socketpair: the parent's end as a Conn and the child's end as a
// file to pass in exec.Cmd.ExtraFiles (close it in the parent once the child has started).
func Pair() (*Conn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("descend: socketpair: %w", err)
	}
	parent := os.NewFile(uintptr(fds[0]), "descend-parent")
	child := os.NewFile(uintptr(fds[1]), "descend-child")
	c, err := FileConn(parent)
	if err != nil {
		child.Close()
		return nil, nil, err
	}
	return c, child, nil
}

// Send writes one message.
func (c *Conn) Send(m Message) error {
	b, err := Encode(m)
	if err != nil {
		return err
	}
	frame := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(frame, uint32(len(b)))
	copy(frame[4:], b)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.c.Write(frame); err != nil {
		return fmt.Errorf("descend: send %s: %w", m.Type(), err)
	}
	return nil
}

// Recv reads the next message. It returns io.EOF when the other side has closed.
func (c *Conn) Recv() (Message, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return nil, fmt.Errorf("descend: truncated frame: %w", err)
	}
	return Decode(b)
}

// Close closes the socket; a blocked Recv returns.
func (c *Conn) Close() error { return c.c.Close() }

// Handlers is a dispatch table from message type to handler.
type Handlers map[Type]func(Message) error

// Dispatch calls the handler for m's type.
func (h Handlers) Dispatch(m Message) error {
	f, ok := h[m.Type()]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoHandler, m.Type())
	}
	return f(m)
}
