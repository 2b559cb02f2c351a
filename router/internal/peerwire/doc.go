// Package peerwire is the peer protocol's codec: the frames olio's routers exchange over mux
// streams on the peer leg (the accepting router forwards a request, the owner serves it),
// their encoding (Append*), their decoding (Decode*, ReadFrameHeader, ReadPayload, Body)
// and the protocol's versions. What the frames carry and when — the forwarding and serving —
// is package process's (peerforward.go, peerserve.go).
//
// The specification — frames, their order, errors and versions — is docs/peer-protocol.md
// at the repository's root; change it with this package.
package peerwire
