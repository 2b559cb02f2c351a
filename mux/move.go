package mux

import (
	"fmt"
	"net"
)

// Moving to another socket path, when the run directory the sockets live in is replaced
// (the master makes a new one if the old is removed): a Listener re-binds at the new path
// while the streams of its sessions go on, and a Pool whose peer table names new paths
// lets the sessions on the old ones finish their streams.

// Rebind moves the Listener to a new unix socket at path (bound as Listen binds): from now
// on it accepts sessions there. The old socket is closed and its file removed if it is
// still the one bound. Every session connected through the old socket is sent away: its
// peer opens no new stream on it (and dials the new path once told of it), its streams
// already open are served as before, and the session closes after its last one. A closed
// Listener returns an error wrapping ErrClosed.
func (l *Listener) Rebind(path string) error {
	ln, sock, err := ListenUnix(path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		ln.Close()
		sock.Remove()
		return fmt.Errorf("mux: rebind %s: %w", path, ErrClosed)
	}
	oldLn, oldSock := l.ln, l.sock
	l.ln, l.sock, l.path, l.addr = ln, sock, path, &net.UnixAddr{Name: path, Net: "unix"}
	sessions := make([]*session, 0, len(l.sessions))
	for s := range l.sessions {
		sessions = append(sessions, s)
	}
	l.wg.Add(1)
	l.mu.Unlock()
	go l.acceptLoop(ln, path)
	oldLn.Close() // its accept loop returns
	oldSock.Remove()
	for _, s := range sessions {
		s.drain()
	}
	return nil
}

// retireLocked takes s out of use because its peer moved to another path: its session, if
// it carries streams, keeps them until the peer closes it after the last one (see
// Listener.Rebind), instead of resetting them as kill does; an idle one is closed. p.mu is
// held.
func (p *Pool) retireLocked(s *slot) {
	s.mu.Lock()
	s.dead = true
	ps := s.sess.Swap(nil)
	s.mu.Unlock()
	if ps == nil {
		return
	}
	sess := ps.ys
	switch {
	case sess.IsClosed():
	case sess.NumStreams() == 0:
		sess.Close()
	default:
		p.retired[sess] = struct{}{}
	}
}
