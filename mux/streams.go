package mux

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// yamux's frame flags that open and end a stream (see the yamux spec).
const (
	yamuxFlagSYN = 1 << 0
	yamuxFlagFIN = 1 << 2
	yamuxFlagRST = 1 << 3
)

// streamSet is what a session's receive side has seen of its streams' ends: it follows the
// frames the session reads and marks a stream that the peer closed (FIN) or reset (RST) as
// the frame arrives, before yamux handles it, so that this side can tell without a read
// that the peer is done with a stream (Stream.PeerClosed; on a Listener's, OnPeerClose).
type streamSet struct {
	// accepting: a Listener's session, whose streams the peer opens: each is entered as
	// its first frame (SYN) arrives. A Pool's streams are entered by Open.
	accepting bool

	mu   sync.Mutex
	ends map[uint32]*streamEnd
	over bool // the session has ended (endAll): every stream entered from now on has too

	// The receive side's place in the frames; only the session's receive loop uses it.
	hdr  [yamuxHeaderSize]byte
	have int    // bytes of hdr read so far
	skip uint32 // bytes of a data frame's body still to come
}

// streamEnd is whether the peer is done with one stream, and whom to tell.
type streamEnd struct {
	ended atomic.Bool
	mu    sync.Mutex
	fn    func() // called once when it ends (nil: nobody to tell)
}

func newStreamSet(accepting bool) *streamSet {
	return &streamSet{accepting: accepting, ends: map[uint32]*streamEnd{}}
}

// enter returns stream id's end, entering it if it is not there yet.
func (ss *streamSet) enter(id uint32) *streamEnd {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.over {
		e := &streamEnd{}
		e.ended.Store(true)
		return e
	}
	e := ss.ends[id]
	if e == nil {
		e = &streamEnd{}
		ss.ends[id] = e
	}
	return e
}

// forget drops stream id, closed by this side.
func (ss *streamSet) forget(id uint32) {
	ss.mu.Lock()
	delete(ss.ends, id)
	ss.mu.Unlock()
}

// endAll ends every stream: the session is over.
func (ss *streamSet) endAll() {
	ss.mu.Lock()
	ss.over = true
	ends := make([]*streamEnd, 0, len(ss.ends))
	for _, e := range ss.ends {
		ends = append(ends, e)
	}
	clear(ss.ends)
	ss.mu.Unlock()
	for _, e := range ends {
		e.end()
	}
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
		flags, id := binary.BigEndian.Uint16(h[2:4]), binary.BigEndian.Uint32(h[4:8])
		if id == 0 {
			continue // a ping or a go-away: the session's
		}
		if ss.accepting && flags&yamuxFlagSYN != 0 {
			ss.enter(id)
		}
		if flags&(yamuxFlagFIN|yamuxFlagRST) != 0 {
			ss.mu.Lock()
			e := ss.ends[id]
			ss.mu.Unlock()
			if e != nil {
				e.end()
			}
		}
	}
}

// end marks the stream ended and tells whoever asked to be told.
func (e *streamEnd) end() {
	e.ended.Store(true)
	e.mu.Lock()
	fn := e.fn
	e.fn = nil
	e.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// onEnd has fn called once the stream ends: at once if it has.
func (e *streamEnd) onEnd(fn func()) {
	e.mu.Lock()
	if !e.ended.Load() {
		e.fn = fn
		e.mu.Unlock()
		return
	}
	e.mu.Unlock()
	fn()
}

// PeerClosed reports whether the stream is known to be over at the peer's end: the peer has
// closed or reset it, or the session has ended. It reads nothing: a stream kept idle between
// requests is checked with it before it carries one that must not be sent on a dead stream.
// A close still on its way is not seen.
func (s *Stream) PeerClosed() bool {
	return s.end.ended.Load() || s.Session().IsClosed()
}

// Close closes the stream.
func (s *Stream) Close() error {
	s.set.forget(s.StreamID())
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
