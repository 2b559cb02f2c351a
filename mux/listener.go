package mux

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// Listener accepts yamux sessions on a unix socket and yields every stream of
// every session as a net.Conn. It implements net.Listener.
type Listener struct {
	path  string            // guarded by mu once Rebind may move it, as addr, ln and sock are
	addr  *net.UnixAddr     //
	ln    *net.UnixListener //
	sock  *SocketFile       // removed by Close if it is still ours
	ycfg  *yamux.Config
	log   *slog.Logger
	conns chan net.Conn // streams handed from session goroutines to Accept

	done   chan struct{}      // closed by Close
	ctx    context.Context    // cancelled by Close; unblocks AcceptStreamWithContext
	cancel context.CancelFunc //
	wg     sync.WaitGroup     // the accept loop and every session goroutine

	mu        sync.Mutex
	closed    bool
	goingAway bool // GoAway was called: every session, new ones too, is sent away
	sessions  map[*session]struct{}

	closeOnce sync.Once
	closeErr  error

	accepted atomic.Int64 // raw connections accepted (one per peer session)
}

// Listen binds a unix socket at path and starts accepting yamux sessions on
// it. A stale socket file at path is removed first; any other kind of file
// there is an error. The socket file gets mode 0600 (the run directory it
// lives in is 0700 already).
func Listen(path string, cfg *Config) (*Listener, error) {
	c, ycfg, err := resolve(cfg)
	if err != nil {
		return nil, err
	}
	ln, sock, err := ListenUnix(path)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		path:     path,
		addr:     &net.UnixAddr{Name: path, Net: "unix"},
		ln:       ln,
		sock:     sock,
		ycfg:     ycfg,
		log:      c.Logger,
		conns:    make(chan net.Conn),
		done:     make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		sessions: make(map[*session]struct{}),
	}
	l.wg.Add(1)
	go l.acceptLoop(ln, path)
	return l, nil
}

// Accept waits for the next stream from any peer. After Close it returns an
// error wrapping ErrClosed (and so net.ErrClosed).
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case <-l.done:
		return nil, l.errClosed()
	default:
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.errClosed()
	}
}

func (l *Listener) errClosed() error {
	return &net.OpError{Op: "accept", Net: "unix", Addr: l.Addr(), Err: ErrClosed}
}

// Addr returns the socket's address (a *net.UnixAddr).
func (l *Listener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr
}

// Close stops accepting: it closes the socket, removes the socket file (if it
// is still the one Listen bound), makes Accept return ErrClosed, and waits for
// the Listener's goroutines. Sessions without an accepted stream still open are
// closed at once; every other session is told to go away (its peer opens no
// new stream on it and re-dials) and is closed as soon as its last accepted
// stream is closed. So, as with any net.Listener, connections already
// returned by Accept are not cut: http.Server.Shutdown drains them. Close is
// safe to call more than once and concurrently.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		ln, sock, path := l.ln, l.sock, l.path
		l.mu.Unlock()
		close(l.done)
		l.cancel()
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			l.closeErr = fmt.Errorf("mux: close %s: %w", path, err)
		}
		l.wg.Wait()

		l.mu.Lock()
		sessions := make([]*session, 0, len(l.sessions))
		for s := range l.sessions {
			sessions = append(sessions, s)
		}
		clear(l.sessions)
		l.mu.Unlock()
		for _, s := range sessions {
			s.drain()
		}

		if err := sock.Remove(); err != nil && l.closeErr == nil {
			l.closeErr = err
		}
	})
	return l.closeErr
}

// GoAway tells every peer to open no new stream on its session and to re-dial the socket
// path, where a replacement may have bound, while the Listener goes on accepting: streams
// already open are served as before. A session that connects afterwards (through a path
// not yet re-bound) is sent away at once. yamux refuses, with a reset, a stream whose
// opening crossed the message; the opener knows the stream was never accepted and opens
// another. Close still ends the Listener.
func (l *Listener) GoAway() {
	l.mu.Lock()
	l.goingAway = true
	sessions := make([]*session, 0, len(l.sessions))
	for s := range l.sessions {
		sessions = append(sessions, s)
	}
	l.mu.Unlock()
	for _, s := range sessions {
		s.ys.GoAway()
	}
}

// acceptLoop accepts raw connections on ln, bound at path, and starts a session goroutine
// for each, until ln is closed.
func (l *Listener) acceptLoop(ln *net.UnixListener, path string) {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off as
			// http.Server does, instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("mux: accept failed", "path", path, "err", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		l.accepted.Add(1)
		streams := newStreamSet(true)
		ys, err := yamux.Server(&coalescingConn{Conn: c, streams: streams}, l.ycfg)
		if err != nil { // only for a bad config, which resolve rejected
			c.Close()
			l.log.Error("mux: yamux server", "path", path, "err", err)
			continue
		}
		s := &session{l: l, ys: ys, streams: streams}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			ys.Close()
			return
		}
		l.sessions[s] = struct{}{}
		l.wg.Add(1)
		away := l.goingAway
		l.mu.Unlock()
		if away {
			ys.GoAway()
		}
		go s.acceptStreams()
	}
}

// session is one peer's yamux session on the server side.
type session struct {
	l       *Listener
	ys      *yamux.Session
	streams *streamSet

	mu       sync.Mutex
	open     int  // streams handed out and not closed yet
	draining bool // the Listener is closed: close ys once open reaches 0
}

// acceptStreams hands every stream of the session to Accept until the
// session ends or the Listener closes.
func (s *session) acceptStreams() {
	l := s.l
	defer l.wg.Done()
	for {
		st, err := s.ys.AcceptStreamWithContext(l.ctx)
		if err != nil {
			if l.ctx.Err() != nil {
				return // Close drains this session
			}
			if !s.ys.IsClosed() {
				continue // one stream's ACK failed; the session lives on
			}
			l.mu.Lock()
			delete(l.sessions, s)
			l.mu.Unlock()
			return
		}
		c := &serverConn{Stream: st, s: s, end: s.streams.enter(st.StreamID())}
		s.mu.Lock()
		s.open++
		s.mu.Unlock()
		select {
		case l.conns <- c:
		case <-l.done:
			c.Close()
			return
		}
	}
}

// release accounts for one closed stream.
func (s *session) release() {
	s.mu.Lock()
	s.open--
	idle := s.draining && s.open == 0
	s.mu.Unlock()
	if idle {
		s.ys.Close()
	}
}

// drain closes the session once it has no open stream, and asks the peer to
// open no more streams on it meanwhile.
func (s *session) drain() {
	s.mu.Lock()
	s.draining = true
	idle := s.open == 0
	s.mu.Unlock()
	if idle {
		s.ys.Close()
		return
	}
	s.ys.GoAway()
}

// serverConn is a stream returned by Listener.Accept; closing it lets a
// draining session close.
type serverConn struct {
	*yamux.Stream
	s      *session
	end    *streamEnd
	closed atomic.Bool
}

// Close closes the stream.
func (c *serverConn) Close() error {
	err := c.Stream.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.s.streams.forget(c.StreamID())
		c.s.release()
	}
	return err
}

// OnPeerClose has fn called once, on the session's receive loop (fn must not block), when
// the peer closes or resets the stream or the session ends, as the frame arrives and
// without a read: at once if that has happened. A server serving one request at a time on
// the stream learns so that its client gave the request up.
func (c *serverConn) OnPeerClose(fn func()) { c.end.onEnd(fn) }
