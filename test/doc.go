// Package test holds olio's end-to-end tests: they build the olio binary, run it as real
// processes on loopback, and drive it over real sockets and signals. The benchmark harness
// that compares olio with HAProxy, nginx and the apps served directly is in test/bench.
package test
