package mux

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// A peer is heard from whenever bytes arrive on its session; yamux's keep-alive pings, sent
// by both ends every KeepAliveInterval, make a live idle peer heard that often. A peer that
// is stopped (SIGSTOP) or stuck reads nothing: what is written to it waits in its socket
// buffers, and runs when it resumes. A router must not send more there, and must not send
// again elsewhere what it has sent there: liveness tells it which case it is in.

// liveness is what a Pool's session has heard from its peer.
type liveness struct {
	start time.Time    // the session's start, with its monotonic reading
	last  atomic.Int64 // when the peer was last heard, in ns since start; -1: never

	waiting atomic.Bool // someone waits on wake: heard must close it
	mu      sync.Mutex
	wake    chan struct{} // closed when the peer is next heard; nil: nobody waits

	pinging atomic.Bool // a ping (kick) is under way
}

func newLiveness() *liveness {
	l := &liveness{start: time.Now()}
	l.last.Store(-1)
	return l
}

// heard notes bytes from the peer; the session's receive loop calls it.
func (l *liveness) heard() {
	l.last.Store(int64(time.Since(l.start)))
	if l.waiting.Load() {
		l.mu.Lock()
		if l.wake != nil {
			close(l.wake)
			l.wake = nil
		}
		l.waiting.Store(false)
		l.mu.Unlock()
	}
}

// next returns a channel closed when the peer is next heard. Check the state after calling
// it: a byte heard just before is not reported.
func (l *liveness) next() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.wake == nil {
		l.wake = make(chan struct{})
	}
	l.waiting.Store(true)
	return l.wake
}

// unheard returns how long the peer has not been heard from (since the session's start, if
// never), and whether it was ever heard.
func (l *liveness) unheard() (d time.Duration, ever bool) {
	last := l.last.Load()
	now := int64(time.Since(l.start))
	if last < 0 {
		return time.Duration(now), false
	}
	return time.Duration(now - last), true
}

// live reports whether the peer was heard from within silence.
func (l *liveness) live(silence time.Duration) bool {
	d, ever := l.unheard()
	return ever && d < silence
}

// silent reports whether the peer has gone silence without a byte (a new session too).
func (l *liveness) silent(silence time.Duration) bool {
	d, _ := l.unheard()
	return d >= silence
}

// kick pings the peer, unless a ping is under way, so that a live peer is heard at once.
func (l *liveness) kick(sess *yamux.Session) {
	if !l.pinging.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer l.pinging.Store(false)
		sess.Ping() // its answer is heard; a peer that never answers is silent already
	}()
}

// Stream is a stream Pool.Open returned: a yamux stream that can tell whether its peer has
// gone silent.
type Stream struct {
	*yamux.Stream
	live    *liveness
	silence time.Duration

	set *streamSet // its session's streams
	end *streamEnd // whether the peer is done with it

	// The watch (Watch, Unwatch).
	wmu     sync.Mutex
	watch   *time.Timer
	due     time.Time // when the watch looks at the peer next; zero: not watching
	recheck time.Duration
	broken  bool // the watch broke the stream off
}

// PeerSilent reports whether the stream's peer has not been heard from within
// Config.Silence: it is stopped or stuck. What was written on the stream may sit unread in
// the peer's buffers and be read, and acted on, when the peer resumes; a request sent on it
// must not be sent again elsewhere.
func (s *Stream) PeerSilent() bool { return s.live.silent(s.silence) }
