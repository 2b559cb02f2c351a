// Package keys is olio's routing rule: where a request's key is found (Spec, from the
// --key flag: a header, a query parameter, a cookie, a path segment, the path or the
// host) and which worker owns it (Owner: Lamping and Veach's jump consistent hash of the
// key's xxhash64 over the worker count, so growing from N to N+1 workers moves only
// 1/(N+1) of the keys).
//
// Every router, the master's key statistics and a Go service (through package router's
// Owner) compute owners with this package, so they always agree.
package keys
