package mux

import (
	"encoding/binary"
	"sync"
	"time"
)

// yamux's frame flags that end a stream (see the yamux spec).
const (
	yamuxFlagFIN = 1 << 2
	yamuxFlagRST = 1 << 3
)

// streamSet is the streams a Pool's session has open, by ID, and what its receive side has
// seen of their frames: it marks a stream the peer closed (FIN) or reset (RST) as the frame
// arrives, before yamux handles it, so that a caller can tell, without a read, that a stream
// it kept idle is no longer open at the peer's end (Stream.PeerClosed).
type streamSet struct {
	mu      sync.Mutex
	streams map[uint32]*Stream

	// The receive side's place in the frames; only the session's receive loop uses it.
	hdr  [yamuxHeaderSize]byte
	have int    // bytes of hdr read so far
	skip uint32 // bytes of a data frame's body still to come
}

func newStreamSet() *streamSet { return &streamSet{streams: map[uint32]*Stream{}} }

func (ss *streamSet) add(s *Stream) {
	ss.mu.Lock()
	ss.streams[s.StreamID()] = s
	ss.mu.Unlock()
}

func (ss *streamSet) remove(s *Stream) {
	ss.mu.Lock()
	if ss.streams[s.StreamID()] == s {
		delete(ss.streams, s.StreamID())
	}
	ss.mu.Unlock()
}

// scan follows the frames in p, the next bytes the session reads from its connection.
func (ss *streamSet) scan(p []byte) {
	for len(p) > 0 {
		if ss.skip > 0 {
			n := min(uint32(len(p)), ss.skip)
			ss.skip -= n
			p = p[n:]
			continue
		}
		n := copy(ss.hdr[ss.have:], p)
		ss.have += n
		p = p[n:]
		if ss.have < yamuxHeaderSize {
			return
		}
		ss.have = 0
		h := ss.hdr[:]
		if h[1] == yamuxTypeData {
			ss.skip = binary.BigEndian.Uint32(h[8:12])
		}
		if binary.BigEndian.Uint16(h[2:4])&(yamuxFlagFIN|yamuxFlagRST) != 0 {
			ss.ended(binary.BigEndian.Uint32(h[4:8]))
		}
	}
}

// ended marks stream id as closed by the peer.
func (ss *streamSet) ended(id uint32) {
	ss.mu.Lock()
	s := ss.streams[id]
	ss.mu.Unlock()
	if s != nil {
		s.peerClosed.Store(true)
	}
}

// PeerClosed reports whether the stream is known to be over at the peer's end: the peer has
// closed or reset it, or the session has ended. It reads nothing: a stream kept idle between
// requests is checked with it before it carries one that must not be sent on a dead stream.
// A close still on its way is not seen.
func (s *Stream) PeerClosed() bool {
	return s.peerClosed.Load() || s.Session().IsClosed()
}

// Close closes the stream.
func (s *Stream) Close() error {
	if s.set != nil {
		s.set.remove(s)
	}
	return s.Stream.Close()
}

// Watch arms the stream's watch for an exchange on it: if, after d, the peer has not been
// heard from within Config.Silence (PeerSilent), the stream is broken off (its reads and
// writes fail at once, and Unwatch reports it); while the peer is heard from, it looks
// again every recheck. Unwatch ends it. The watch's timer is the stream's own, kept for the
// next exchange: arming it allocates nothing after the first time.
func (s *Stream) Watch(d, recheck time.Duration) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.due, s.recheck, s.broken = time.Now().Add(d), recheck, false
	if s.watch == nil {
		s.watch = time.AfterFunc(d, s.look)
		return
	}
	s.watch.Reset(d)
}

// Unwatch ends the stream's watch; true: the watch had found the peer silent and broken the
// stream off.
func (s *Stream) Unwatch() (broken bool) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.watch != nil {
		s.watch.Stop()
	}
	s.due = time.Time{}
	return s.broken
}

// look is the watch's timer: it fires at s.due, or earlier for an exchange whose watch has
// ended since (then it was reset to the next due, or stopped).
func (s *Stream) look() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.due.IsZero() || time.Now().Before(s.due) {
		return
	}
	if !s.PeerSilent() {
		s.due = time.Now().Add(s.recheck)
		s.watch.Reset(s.recheck)
		return
	}
	s.broken, s.due = true, time.Time{}
	s.SetDeadline(time.Unix(1, 0))
}
