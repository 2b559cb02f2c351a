// Package test holds olio's end-to-end tests: they build the olio binary, run it as real
// processes on loopback, and drive it over real sockets and signals. The several-hosts
// tests (multihost_test.go) run olio hosts in network namespaces they create, behind HAProxy
// and nginx, on 198.18.0.0/15 addresses that exist only there. The benchmark harness
// that compares olio with HAProxy, nginx and the apps served directly is in test/bench.
package test
