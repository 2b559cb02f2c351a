// Package mux carries HTTP connections between olio's routers over long-lived
// yamux sessions on unix sockets.
//
// Every router listens on a unix socket in the master's private run directory
// (see ../shared/DESIGN.md, "Routing", step 5). A router that accepts a request
// owned by another worker forwards it over a stream of the one yamux session it
// keeps to that peer:
//
//	accepting router                          owner router
//	http.Transport{DialContext: Pool.Open} ─► Listener ─► http.Server ─► app
//
// Listen binds the socket (mode 0600, a stale socket file is replaced) and
// yields every stream of every session as a net.Conn, so an http.Server can
// Serve on it. Closing a Listener behaves like closing any net.Listener: it
// stops accepting, but the streams already handed out keep working until
// their owner (normally the http.Server, during Shutdown) closes them.
//
// A Pool holds one client session per peer index. Pool.Open opens a new stream
// on the live session, which costs an atomic load and yamux's own stream set-up.
// When there is no live session, it dials once on behalf of every concurrent
// caller; while the peer is absent (its socket missing or refusing, or its
// session gone because it is restarting) it keeps retrying until the caller's
// context is done, so requests wait for a restarting owner instead of failing.
//
// Both ends of a session ping each other every DefaultKeepAliveInterval. A peer not heard
// from within Config.Silence is silent (stopped with SIGSTOP, or stuck): what is written to
// it waits in its buffers until it resumes. Open does not use a silent peer's session (nor a
// new session before the peer's first answer: a stopped peer's socket still accepts
// connections); it waits for the peer to be heard again. Live and Heard tell a caller
// whether to hand a peer something it cannot take back; Stream.PeerSilent tells whether
// what was sent on a stream may still be read by a peer that resumes.
//
// Each session's receive side follows the yamux frames it reads, and marks a stream as the
// peer's FIN or RST for it arrives (or the session ends), before yamux handles the frame:
// Stream.PeerClosed tells, without a read, whether a stream kept idle is still open at the
// peer's end, and a Listener's stream calls the function given to its OnPeerClose then, so
// that a server learns that its client gave a request up. Stream.Watch breaks a stream off
// once its peer has gone silent past a time, on the stream's own timer.
//
// ListenUnix and ListenUnixgram bind every unix socket between olio processes the same way
// (the peer sockets, the routers' hand-off sockets, the apps' notify sockets, the control
// socket): mode 0600, a stale socket file replaced, and a SocketFile that removes the file
// only while it is still the one bound.
package mux
