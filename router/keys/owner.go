package keys

import "github.com/cespare/xxhash/v2"

// Jump returns the bucket in [0, buckets) that owns key, by Lamping and Veach's jump consistent
// hash ("A Fast, Minimal Memory, Consistent Hash Algorithm", 2014), exactly as published, so it
// agrees with every other implementation of the paper. Growing from n to n+1 buckets moves only
// the keys whose new bucket is n, about 1/(n+1) of them; shrinking moves only those of bucket n.
//
// Jump returns -1 when buckets <= 0: there is no owner, and 0 would name a worker that does not
// exist. Callers route only when at least one worker runs.
func Jump(key uint64, buckets int) int {
	if buckets <= 0 {
		return -1
	}
	b, j := int64(-1), int64(0)
	for j < int64(buckets) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}

// Owner returns the index of the worker, among workers, that owns the routing key:
// Jump(xxhash.Sum64String(key), workers). It returns -1 when workers <= 0.
func Owner(key string, workers int) int {
	return Jump(xxhash.Sum64String(key), workers)
}
