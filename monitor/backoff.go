package monitor

import "time"

// Default Backoff limits.
const (
	DefaultBackoffMin    = 100 * time.Millisecond
	DefaultBackoffMax    = 30 * time.Second
	DefaultBackoffStable = 10 * time.Second
)

// Backoff computes the wait before restarting a child that exited. The wait
// doubles with every consecutive short run (one shorter than Stable), from
// Min up to Max, and falls back to Min after a run of at least Stable. A zero
// field takes its default (DefaultBackoffMin, ...). Not safe for concurrent
// use; a Supervisor uses its own copy.
type Backoff struct {
	Min, Max, Stable time.Duration

	failures int
}

// Next records an exit after a run of uptime and returns how long to wait
// before the next start: Min after a stable run, else Min·2^(failures-1)
// capped at Max.
func (b *Backoff) Next(uptime time.Duration) time.Duration {
	lo, hi, stable := b.Min, b.Max, b.Stable
	if lo <= 0 {
		lo = DefaultBackoffMin
	}
	if hi <= 0 {
		hi = DefaultBackoffMax
	}
	hi = max(hi, lo)
	if stable <= 0 {
		stable = DefaultBackoffStable
	}
	if uptime >= stable {
		b.failures = 0
	} else {
		b.failures++
	}
	d := lo
	for i := 1; i < b.failures && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// Failures is the number of consecutive short runs.
func (b *Backoff) Failures() int { return b.failures }

// Reset forgets the failures, as after a deliberate restart.
func (b *Backoff) Reset() { b.failures = 0 }
