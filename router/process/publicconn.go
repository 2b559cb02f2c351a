package process

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// The public connection is wrapped on its way to net/http: framingConn watches its framing,
// prefixConn replays the bytes another router read, limitedConn holds a --max-conns slot.
// A wrapper that embeds net.Conn hides every method its net.Conn has beyond the interface,
// and net/http and the handoff look for three of them:
//
//   - CloseWrite: after an early answer to a client still sending (a 431, a 400) net/http
//     half-closes and waits a moment, so that the client reads the answer and a clean end
//     before the close; without it the client gets a reset, and often loses the answer;
//   - io.ReaderFrom: an answer copied from a file or a socket goes out with sendfile or
//     splice;
//   - syscall.Conn: a handoff sends the socket's descriptor.
//
// So every wrapper embeds passConn, which passes the three on to what it wraps.

// passConn is a net.Conn that passes on CloseWrite, ReadFrom and SyscallConn to the
// connection it wraps, when that has them.
type passConn struct{ net.Conn }

// errNotSocket is SyscallConn's error for a connection that is not a socket.
var errNotSocket = errors.New("router: the connection is not a socket")

// CloseWrite half-closes the connection (a TCP FIN), when it can be.
func (c passConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// ReadFrom writes what r holds, with sendfile or splice where the connection can.
func (c passConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// SyscallConn passes the socket on (a handoff sends its descriptor).
func (c passConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errNotSocket
}

// limitListener bounds the connections its Listener has open at once: past the bound,
// Accept waits for one to close (as golang.org/x/net/netutil's LimitListener, whose
// connections hide what passConn passes on).
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

// Accept waits for a free slot, then for a connection.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitedConn{passConn: passConn{c}, release: func() { <-l.sem }}, nil
}

// Close closes the listener and ends an Accept waiting for a slot.
func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

// limitedConn is a connection holding a slot of its limitListener until closed.
type limitedConn struct {
	passConn
	once    sync.Once
	release func()
}

// Close closes the connection and frees its slot, once.
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// hijackedConn is the public connection as a handler that takes it over gets it (an
// upgrade, a handoff): it passes on ReadFrom and SyscallConn but not CloseWrite. When a
// tunnel's app side ends, ReverseProxy's copier half-closes a connection that can, then
// waits for the client to close its side, which a client may never do; without CloseWrite
// it closes the client's connection at once, as the peer leg's tunnel does.
type hijackedConn struct{ net.Conn }

// ReadFrom writes what r holds, with sendfile or splice where the connection can.
func (c hijackedConn) ReadFrom(r io.Reader) (int64, error) { return passConn(c).ReadFrom(r) }

// SyscallConn passes the socket on (a handoff sends its descriptor).
func (c hijackedConn) SyscallConn() (syscall.RawConn, error) { return passConn(c).SyscallConn() }
