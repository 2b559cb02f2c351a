// Package process is one olio router process, as the master (package listener) starts it:
// it accepts connections on the listening socket it shares with its sibling routers,
// works out which worker owns each request's key (package router/keys), and either serves
// the request through its own app or forwards it to the owner over a long-lived yamux
// session (package mux).
//
// A router is the hidden `olio router` subcommand (Run), started by the master with two
// inherited descriptors: its end of the descend socketpair and the public listener. It
// learns its configuration and the cluster's membership over descend, starts and
// supervises its app (package monitor), and reports its state and counters back. In the
// embedded mode the Go service is the router (ServeEmbedded, which package router's
// Server calls) and serves its own keys in-process.
//
// Ownership is jump(xxhash64(key), N) over the current membership; a request with no key is
// served where it was accepted. Requests carrying X-Olio-Index with the right X-Olio-Secret
// go to that worker. Requests whose owner is not ready wait up to the forward timeout.
//
// The master and the olio command use this package; a Go service imports package router.
package process
