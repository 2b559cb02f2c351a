package mux

import (
	"errors"
	"fmt"
	"net"

	"github.com/hashicorp/yamux"
)

// Errors returned by this package. Test for them with errors.Is: the returned
// errors wrap them together with the cause (the last dial error, or the
// context's error).
var (
	// ErrPeerUnavailable is wrapped by every error of Pool.Open that is not
	// ErrClosed: the peer could not be reached before the context was done,
	// failed in a way retrying cannot fix, or its index is unknown.
	ErrPeerUnavailable = errors.New("peer unavailable")

	// ErrUnknownPeer is wrapped (together with ErrPeerUnavailable) when
	// Pool.Open is given an index outside the table set by Pool.SetPeers.
	ErrUnknownPeer = errors.New("unknown peer index")

	// ErrPeerSilent is wrapped (together with ErrPeerUnavailable) when the peer
	// has a session but has not been heard from within Config.Silence, and was
	// still silent when the context was done: it is stopped or stuck, not gone.
	ErrPeerSilent = errors.New("peer silent")

	// ErrClosed is returned by Pool.Open once the Pool is closed, and wrapped
	// by Listener.Accept once the Listener is closed. It wraps net.ErrClosed,
	// so errors.Is(err, net.ErrClosed) holds as well.
	ErrClosed = fmt.Errorf("mux: closed: %w", net.ErrClosed)
)

// Refused reports whether err, from a stream Pool.Open returned, says the peer reset the
// stream before accepting it: the peer's Listener had sent the session away (GoAway) when
// the stream's opening reached it. Whatever was written on such a stream was never read,
// so the request it carried can be sent again on a new stream, which reaches the socket
// path's new listener.
func Refused(err error) bool { return errors.Is(err, yamux.ErrConnectionReset) }

// ClosedBeforeWrite reports whether err, from a write on a stream Pool.Open returned, says
// the stream was already closed when the write began: by this side, or because its session
// had ended (the peer went away). Such a write sends nothing; if it wrote no byte at all
// (its count is 0), nothing of what it carried reached the peer.
func ClosedBeforeWrite(err error) bool { return errors.Is(err, yamux.ErrStreamClosed) }
