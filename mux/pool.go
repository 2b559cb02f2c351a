package mux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// Pool keeps one long-lived client session per peer and re-dials when a peer
// restarts. Its methods are safe for concurrent use.
type Pool struct {
	cfg    *Config
	ycfg   *yamux.Config
	dialer net.Dialer

	slots  atomic.Pointer[[]*slot] // index → peer; replaced whole by SetPeers
	closed atomic.Bool
	done   chan struct{} // closed by Close: unblocks waiting Opens

	mu      sync.Mutex // serialises SetPeers and Close; guards retired
	retired map[*yamux.Session]struct{}

	closeOnce sync.Once

	// testHookDial, if set, is called with the result of every connect attempt.
	testHookDial func(error)
}

// slot is one peer: its socket path and its current session.
type slot struct {
	path string
	sess atomic.Pointer[peerSession] // nil: no session

	mu      sync.Mutex
	dialing *attempt // the connect in flight, shared by every waiting Open
	dead    bool     // replaced by SetPeers, or the Pool is closed
}

// peerSession is a client session and what it has heard from its peer.
type peerSession struct {
	ys      *yamux.Session
	live    *liveness
	streams *streamSet
}

// attempt is one connect, shared by the Opens that wait for it.
type attempt struct {
	done chan struct{}
	err  error // valid once done is closed
}

// errSlotGone says the slot was replaced while an Open used it: look again.
var errSlotGone = errors.New("mux: peer table changed")

// NewPool returns a Pool with no peers; call SetPeers. It panics if cfg is
// invalid (check it first with VerifyConfig if it comes from a user).
func NewPool(cfg *Config) *Pool {
	c, ycfg, err := resolve(cfg)
	if err != nil {
		panic(err)
	}
	p := &Pool{
		cfg:     c,
		ycfg:    ycfg,
		dialer:  net.Dialer{Timeout: c.DialTimeout},
		done:    make(chan struct{}),
		retired: make(map[*yamux.Session]struct{}),
	}
	p.slots.Store(new([]*slot))
	return p
}

// SetPeers replaces the peer table: paths[i] is the socket of peer i. The
// session of a peer whose path is unchanged is kept; the session of a peer
// whose path changed (it moved, see Listener.Rebind) is retired: no new
// stream opens on it, and its open streams finish. The sessions of peers whose
// index is gone are closed, which resets their open streams. After Close,
// SetPeers does nothing.
func (p *Pool) SetPeers(paths []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		return
	}
	old := *p.slots.Load()
	slots := make([]*slot, len(paths))
	for i, path := range paths {
		if i < len(old) && old[i].path == path {
			slots[i] = old[i]
		} else {
			slots[i] = &slot{path: path}
		}
	}
	p.slots.Store(&slots)
	for i, s := range old {
		switch {
		case i >= len(slots):
			s.kill()
		case slots[i] != s:
			p.retireLocked(s)
		}
	}
}

// Open returns a new stream to peer index, a *Stream. On a live session (its peer heard
// from within Config.Silence) that is all it does. Otherwise it connects, sharing one
// connect attempt with every concurrent caller for the same peer, and waits for the peer's
// first answer to a ping. While the peer is absent (no socket yet, connection refused,
// session closed because the peer is restarting or going away) it retries every
// RetryInterval, and while the peer is silent it waits to hear from it, until ctx is done;
// then it returns an error wrapping ErrPeerUnavailable (and ErrPeerSilent for a silent
// peer), ctx's error and the last cause. An index outside the peer table fails at once with
// ErrUnknownPeer and ErrPeerUnavailable; a closed Pool returns ErrClosed.
//
// Open is meant to be an http.Transport's DialContext.
func (p *Pool) Open(ctx context.Context, index int) (net.Conn, error) {
	return p.open(ctx, index, openStream)
}

// Ready waits, as Open does, until peer index has a session and has been heard from within
// Config.Silence, without opening a stream: a caller that keeps streams of its own asks it
// before it sends on one. It returns nil, or Open's errors.
func (p *Pool) Ready(ctx context.Context, index int) error {
	_, err := p.open(ctx, index, openReady)
	return err
}

// Live reports, without waiting, whether peer index has a session and has been heard from
// within Config.Silence.
func (p *Pool) Live(index int) bool {
	slots := *p.slots.Load()
	if index < 0 || index >= len(slots) {
		return false
	}
	ps := slots[index].sess.Load()
	return ps != nil && !ps.ys.IsClosed() && ps.live.live(p.cfg.Silence)
}

// Heard reports whether peer index is live, as Live does, connecting to it first if it has
// no session yet and waiting for its first answer, for at most Config.Silence (and until
// ctx is done). A peer that is silent already is not waited for. It is the check to make
// before handing the peer something that cannot be taken back.
func (p *Pool) Heard(ctx context.Context, index int) bool {
	if p.Live(index) {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Silence)
	defer cancel()
	_, err := p.open(ctx, index, openHeard)
	return err == nil
}

// openMode is what open is asked for.
type openMode int

const (
	openStream openMode = iota // a stream on a live session
	openReady                  // a live session, waiting while the peer is silent
	openHeard                  // a live session, but no wait for a silent peer
)

// errSilent says, in openHeard mode, that the peer is silent.
var errSilent = errors.New("mux: peer silent")

func (p *Pool) open(ctx context.Context, index int, mode openMode) (net.Conn, error) {
	var (
		lastErr error
		dialed  bool // this call connected: a failure now means wait, not loop
	)
	for {
		if p.closed.Load() {
			return nil, ErrClosed
		}
		slots := *p.slots.Load()
		if index < 0 || index >= len(slots) {
			return nil, fmt.Errorf("mux: peer %d: %w: %w (%d peers)", index, ErrPeerUnavailable, ErrUnknownPeer, len(slots))
		}
		s := slots[index]
		if ps := s.sess.Load(); ps != nil {
			if ps.ys.IsClosed() {
				p.drop(s, ps, yamux.ErrSessionShutdown)
				continue
			}
			if !ps.live.live(p.cfg.Silence) {
				switch err := p.await(ctx, ps, mode); {
				case err == nil:
					continue
				case errors.Is(err, ErrClosed):
					return nil, ErrClosed
				default:
					return nil, fmt.Errorf("mux: peer %d at %s: %w: %w: %w", index, s.path, ErrPeerUnavailable, ErrPeerSilent, err)
				}
			}
			if mode != openStream {
				return nil, nil
			}
			c, err := ps.ys.OpenStream()
			if err == nil {
				return &Stream{Stream: c, live: ps.live, silence: p.cfg.Silence, set: ps.streams, end: ps.streams.enter(c.StreamID())}, nil
			}
			p.drop(s, ps, err)
			lastErr = fmt.Errorf("open stream: %w", err)
			if !dialed {
				continue // the session died since we last used it: re-dial now
			}
		} else {
			if err := ctx.Err(); err != nil {
				return nil, unavailable(index, s.path, err, lastErr)
			}
			err := p.dial(ctx, s)
			switch {
			case err == nil:
				dialed = true
				continue
			case errors.Is(err, ErrClosed):
				return nil, ErrClosed
			case errors.Is(err, errSlotGone):
				continue
			case !retriable(err):
				return nil, fmt.Errorf("mux: peer %d at %s: %w: %w", index, s.path, ErrPeerUnavailable, err)
			}
			if lastErr == nil || !expired(ctx) {
				// An attempt cut short by our own deadline says less than
				// the one before it (the peer's ENOENT or ECONNREFUSED).
				lastErr = err
			}
		}
		dialed = false
		t := time.NewTimer(p.cfg.RetryInterval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, unavailable(index, s.path, ctx.Err(), lastErr)
		case <-p.done:
			t.Stop()
			return nil, ErrClosed
		}
	}
}

// await waits until the peer of ps, not heard from lately, is heard (nil), or its session
// closes (nil: look again), or ctx is done (its error). A ping asks the peer to answer at
// once. In openHeard mode a silent peer is not waited for (errSilent), and a new session
// only until it turns silent.
func (p *Pool) await(ctx context.Context, ps *peerSession, mode openMode) error {
	ps.live.kick(ps.ys)
	var turnsSilent <-chan time.Time
	if mode == openHeard {
		d, _ := ps.live.unheard()
		if d >= p.cfg.Silence {
			return errSilent
		}
		t := time.NewTimer(p.cfg.Silence - d)
		defer t.Stop()
		turnsSilent = t.C
	}
	wake := ps.live.next()
	if ps.live.live(p.cfg.Silence) {
		return nil
	}
	select {
	case <-wake:
		return nil
	case <-ps.ys.CloseChan():
		return nil
	case <-turnsSilent:
		return errSilent
	case <-ctx.Done():
		return ctx.Err()
	case <-p.done:
		return ErrClosed
	}
}

// expired reports whether ctx is done or its deadline has passed; the dialer
// reads the deadline itself, before ctx's own timer has fired.
func expired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

func unavailable(index int, path string, ctxErr, lastErr error) error {
	if lastErr == nil {
		return fmt.Errorf("mux: peer %d at %s: %w: %w", index, path, ErrPeerUnavailable, ctxErr)
	}
	return fmt.Errorf("mux: peer %d at %s: %w: %w (last attempt: %w)", index, path, ErrPeerUnavailable, ctxErr, lastErr)
}

// retriable reports whether a connect error means the peer is absent for now
// (not listening yet, restarting, its backlog full) rather than misconfigured.
func retriable(err error) bool {
	var ne net.Error
	return errors.Is(err, syscall.ENOENT) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EAGAIN) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) || // another caller's context, when it led the attempt
		(errors.As(err, &ne) && ne.Timeout())
}

// dial makes sure s has a live session: it joins the connect attempt in
// flight or starts one. It returns nil when s has a session (possibly one
// another caller made), or the attempt's error.
func (p *Pool) dial(ctx context.Context, s *slot) error {
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		if p.closed.Load() {
			return ErrClosed
		}
		return errSlotGone
	}
	if s.sess.Load() != nil {
		s.mu.Unlock()
		return nil
	}
	if a := s.dialing; a != nil {
		s.mu.Unlock()
		select {
		case <-a.done:
			return a.err
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return ErrClosed
		}
	}
	a := &attempt{done: make(chan struct{})}
	s.dialing = a
	s.mu.Unlock()

	a.err = p.connect(ctx, s)
	close(a.done)
	return a.err
}

// connect dials s.path, starts a client session and installs it in s.
func (p *Pool) connect(ctx context.Context, s *slot) error {
	conn, err := p.dialer.DialContext(ctx, "unix", s.path)
	if p.testHookDial != nil {
		p.testHookDial(err)
	}
	var sess *yamux.Session
	live := newLiveness()
	streams := newStreamSet(false)
	if err == nil {
		sess, err = yamux.Client(&coalescingConn{Conn: conn, live: live, streams: streams}, p.ycfg)
		if err != nil { // only for a bad config, which resolve rejected
			conn.Close()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dialing = nil
	if err != nil {
		return err
	}
	if s.dead {
		sess.Close()
		if p.closed.Load() {
			return ErrClosed
		}
		return errSlotGone
	}
	ps := &peerSession{ys: sess, live: live, streams: streams}
	s.sess.Store(ps)
	live.kick(sess) // the peer's answer says it is there: a frozen one's socket accepts connects too
	return nil
}

// drop takes a session that failed to open a stream out of s. A session the
// peer sent away (it is shutting down, or out of stream IDs) still carries
// streams that must finish: it is retired, and the peer closes it when they
// are done. Any other session is dead and closed.
func (p *Pool) drop(s *slot, ps *peerSession, err error) {
	if !s.sess.CompareAndSwap(ps, nil) {
		return // another caller dropped it first
	}
	sess := ps.ys
	if !errors.Is(err, yamux.ErrRemoteGoAway) && !errors.Is(err, yamux.ErrStreamsExhausted) {
		sess.Close()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed.Load() {
		sess.Close()
		return
	}
	for r := range p.retired {
		if r.IsClosed() {
			delete(p.retired, r)
		}
	}
	p.retired[sess] = struct{}{}
}

// kill marks s replaced and closes its session.
func (s *slot) kill() {
	s.mu.Lock()
	s.dead = true
	ps := s.sess.Swap(nil)
	s.mu.Unlock()
	if ps != nil {
		ps.ys.Close()
	}
}

// Close closes every session (resetting their streams) and makes waiting and
// future Opens return ErrClosed. It is safe to call more than once.
func (p *Pool) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.closed.Store(true)
		close(p.done)
		for _, s := range *p.slots.Load() {
			s.kill()
		}
		for r := range p.retired {
			r.Close()
		}
		clear(p.retired)
	})
	return nil
}
