// Package listener is the olio master: it binds the public socket once, makes the secret and
// the private run directory, starts one router per worker index by re-executing its own
// binary (package router), hands each the listening socket and a descend socketpair,
// supervises them (package monitor), and owns every signal and control command: graceful
// stop, rolling restart, scaling, hot upgrade, status and metrics. It never parses a
// request.
package listener
