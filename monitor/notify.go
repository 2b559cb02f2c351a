package monitor

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/olio-dev/olio/mux"
)

// NotifyEnv is the environment variable through which a child learns the
// path of its Notify socket (systemd's name).
const NotifyEnv = "NOTIFY_SOCKET"

// Notify receives systemd readiness notifications: a unixgram socket (mode
// 0600) on which a child sends datagrams of newline-separated assignments,
// READY=1 among them. One goroutine reads it until Close.
type Notify struct {
	path  string
	file  *mux.SocketFile
	conn  *net.UnixConn
	ready chan struct{}
	done  chan struct{} // closed when the reader has returned

	closeOnce sync.Once
	closeErr  error
}

// SendNotify sends state (e.g. "READY=1") to the unixgram socket at path, as sd_notify
// does; a path starting with @ is an abstract address.
func SendNotify(path, state string) error {
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}

// ListenNotify listens for notifications on a new unixgram socket at path. A
// stale socket file at path is replaced.
func ListenNotify(path string) (*Notify, error) {
	conn, file, err := mux.ListenUnixgram(path)
	if err != nil {
		return nil, fmt.Errorf("monitor: notify socket: %w", err)
	}
	n := &Notify{
		path:  path,
		file:  file,
		conn:  conn,
		ready: make(chan struct{}),
		done:  make(chan struct{}),
	}
	go n.read()
	return n, nil
}

func (n *Notify) read() {
	defer close(n.done)
	buf := make([]byte, 64<<10)
	isReady := false
	for {
		k, err := n.conn.Read(buf)
		if err != nil {
			return // closed (or broken): Wait reports ErrClosed
		}
		if isReady {
			continue // keep draining so senders never block
		}
		if hasReady(buf[:k]) {
			isReady = true
			close(n.ready)
		}
	}
}

// hasReady reports whether a notification datagram holds the assignment
// READY=1 on a line of its own.
func hasReady(msg []byte) bool {
	for line := range strings.SplitSeq(string(msg), "\n") {
		if strings.TrimSpace(line) == "READY=1" {
			return true
		}
	}
	return false
}

// Path is the socket's path: the value for $NOTIFY_SOCKET.
func (n *Notify) Path() string { return n.path }

// Ready is closed when the first READY=1 has arrived.
func (n *Notify) Ready() <-chan struct{} { return n.ready }

// Wait returns nil once READY=1 has arrived, or an error wrapping
// [ErrExited] if c (which may be nil) exits first, [ErrClosed] if n is
// closed first, or ctx's error. It fits Supervisor.Ready.
func (n *Notify) Wait(ctx context.Context, c *Child) error {
	var exited <-chan struct{}
	if c != nil {
		exited = c.Done()
	}
	select {
	case <-n.ready:
		return nil
	case <-exited:
		return fmt.Errorf("monitor: waiting for READY=1: %w", c.exitErr())
	case <-n.done:
		select {
		case <-n.ready:
			return nil
		default:
			return fmt.Errorf("monitor: waiting for READY=1 on %s: %w", n.path, ErrClosed)
		}
	case <-ctx.Done():
		return fmt.Errorf("monitor: waiting for READY=1: %w", ctx.Err())
	}
}

// Close closes the socket, waits for the reader goroutine and removes the
// socket file. It is idempotent.
func (n *Notify) Close() error {
	n.closeOnce.Do(func() {
		err := n.conn.Close()
		<-n.done
		if rerr := n.file.Remove(); rerr != nil && err == nil {
			err = rerr
		}
		if err != nil {
			n.closeErr = fmt.Errorf("monitor: close notify socket: %w", err)
		}
	})
	return n.closeErr
}
