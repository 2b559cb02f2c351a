package process

import (
	"bufio"
	"context"
	"net"

	"github.com/olio-dev/olio/router/internal/connpool"
	"github.com/olio-dev/olio/router/internal/httprules"
)

// peerStreams is the peer leg's pool of streams to one peer (package connpool, as the app
// leg's connections): bounded, idle ones closed by its reaper. A stream has no socket of its
// own, so quiet takes its frames' word; alive checks one before a request that cannot be
// sent again.
type peerStreams struct{ pool connpool.Pool }

func newPeerStreams(dial func(ctx context.Context) (net.Conn, error)) *peerStreams {
	return &peerStreams{pool: connpool.Pool{Dial: dial}}
}

// peerStream is one pooled stream to a peer, with the peer leg's state on it (kept in the
// pool's connection, connpool.Conn.Extra).
type peerStream struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
	// peerVersion is the peer protocol version the stream was greeted in (0: not yet);
	// peerReply: the owner's reply to that hello is still to be read.
	peerVersion int
	peerReply   bool

	pc *connpool.Conn // nil: not from a pool (a test's)
}

// get returns a pooled stream (reused = true) or, with fresh or an empty pool, a new one.
func (s *peerStreams) get(ctx context.Context, fresh bool) (ac *peerStream, reused bool, err error) {
	pc, reused, err := s.pool.Get(ctx, fresh)
	if err != nil {
		return nil, false, err
	}
	ac, _ = pc.Extra.(*peerStream)
	if ac == nil {
		ac = &peerStream{c: pc.Conn, br: pc.R, bw: pc.W, pc: pc}
		pc.Extra = ac
	}
	return ac, reused, nil
}

// put returns ac to the pool once its exchange is complete.
func (s *peerStreams) put(ac *peerStream) { s.pool.Put(ac.pc) }

// CloseIdleConnections closes every idle stream; later ones are closed after use.
func (s *peerStreams) CloseIdleConnections() { s.pool.CloseIdleConnections() }

// What the peer leg shares with the app leg, under the names its code uses.
var (
	errAnswerStarted  = connpool.ErrAnswerStarted // a failure after the answer began: never sent again
	errTooManyInterim = httprules.ErrTooManyInterim
)

// maxInterim bounds the interim answers passed on before a final one.
const maxInterim = httprules.MaxInterim
