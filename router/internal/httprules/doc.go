// Package httprules holds the HTTP rules every leg that passes a request on shares, written
// once: which header fields do not cross a proxy (hop-by-hop fields, and on a request the
// client's forwarded fields and olio's own), what a request carries on about its client
// (X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto, Forwarded, and the fronts whose
// fields olio believes), the request URI sent on (its query as ReverseProxy sends it), the
// protocol an upgrade asks for, and how interim (1xx) answers are passed on.
//
// The legs are the app leg (package appleg), the peer leg (to the owner, package peerwire)
// and the embedded handler; each applies these rules, so that an app gets the same request
// whichever way it came.
package httprules
