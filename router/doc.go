// Package router is one olio worker: it accepts connections on the listening socket it
// shares with its sibling routers, works out which worker owns each request's key, and
// either serves the request through its own app or forwards it to the owner over a
// long-lived yamux session (package mux).
//
// A router is the hidden `olio router` subcommand, started by the master (package listener)
// with two inherited descriptors: its end of the descend socketpair and the public listener.
// It learns its configuration and the cluster's membership over descend, starts and
// supervises its app (package monitor), and reports its state and counters back.
//
// Ownership is jump(xxhash64(key), N) over the current membership; a request with no key is
// served where it was accepted. Requests carrying X-Olio-Index with the right X-Olio-Secret
// go to that worker. Requests whose owner is not ready wait up to the forward timeout.
package router
