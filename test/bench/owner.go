package main

import "github.com/cespare/xxhash/v2"

// owner is the worker index that owns key among workers, exactly as olio
// routes it: jump(xxhash64(key), workers). The direct setup uses it to send
// each request straight to the owning app.
//
// TODO(bench): call router.Owner once the router package has landed, so the
// harness can never drift from olio's routing.
func owner(key string, workers int) int {
	return jump(xxhash.Sum64String(key), workers)
}

// jump is Lamping & Veach's jump consistent hash ("A Fast, Minimal Memory,
// Consistent Hash Algorithm", 2014).
func jump(key uint64, buckets int) int {
	var b, j int64 = -1, 0
	for j < int64(buckets) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}
