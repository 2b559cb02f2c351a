// Package descend carries the typed messages between the olio master and its routers.
//
// The master makes a socketpair for every router it starts and hands one end down as an
// inherited file descriptor; the two sides then exchange length-prefixed, versioned JSON
// frames over it. Every message is a Go type with a fixed [Type]; a frame names its type and
// protocol [Version], so an old router and a new master (or the reverse, during a hot upgrade)
// fail loudly instead of misreading each other.
//
// Master → router: [Config], [Membership], [Prepare], [Release], [Restart], [Drain],
// [StatsRequest], [KeysRequest], [Reopen], [RunDir].
// Router → master: [Hello], [State], [Stats], [Result], [Keys].
//
// A connection opens with a handshake: [Join] on the router's side, [Welcome] on the
// master's. A hot upgrade's two masters say one [Word] each on pipes, not on a Conn.
//
// End of file on the socket means the other side is gone: a router treats it as its master's
// death and exits, which is how no router outlives a master killed with SIGKILL.
package descend
