package process

import (
	"os"
	"runtime"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/olio-dev/olio/descend"
)

// counters are a router's request counters; the master reads them through descend Stats.
type counters struct {
	inFlight      atomic.Int64  // requests being served by this worker's app
	served        atomic.Uint64 // requests answered by this worker's app
	forwardedOut  atomic.Uint64 // requests sent to another worker
	forwardedIn   atomic.Uint64 // requests received from another worker
	handedOut     atomic.Uint64 // connections passed to their owner
	handedIn      atomic.Uint64 // connections received from another worker
	upgraded      atomic.Uint64 // connections the app upgraded (101: WebSocket), not in served
	upgradesOpen  atomic.Int64  // upgraded connections open now
	bodyTimeouts  atomic.Uint64 // request bodies that did not arrive within --body-timeout
	writeTimeouts atomic.Uint64 // writes to a client that did not read within --body-timeout
	duration      prometheus.Histogram

	accessDropped atomic.Uint64 // access log lines dropped because the writer fell behind
	held          atomic.Uint64 // requests that waited: for their key's new owner, or for the app
}

func newCounters() *counters {
	return &counters{duration: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "olio_request_duration_seconds",
		Buckets: prometheus.DefBuckets,
	})}
}

// upgrade follows one local request that the app may upgrade (answer 101: a WebSocket). An
// upgraded connection is a session, not a request: it is counted in upgraded and
// upgradesOpen, and kept out of served and the request duration histogram (a session
// lasting an hour would read as an hour-long request).
type upgrade struct {
	c  *counters
	on bool // the app answered 101; set and read on the request's goroutine
}

// upgradeKey keys a request's *upgrade in its context.
type upgradeKey struct{}

func (u *upgrade) begin() {
	u.on = true
	u.c.upgraded.Add(1)
	u.c.upgradesOpen.Add(1)
}

// end reports whether the request was an upgraded connection, now closed (nil: a request
// that did not ask for an upgrade).
func (u *upgrade) end() bool {
	if u == nil {
		return false
	}
	if u.on {
		u.c.upgradesOpen.Add(-1)
	}
	return u.on
}

// histogram snapshots the duration histogram for the wire.
func (c *counters) histogram() descend.Histogram {
	var m dto.Metric
	if err := c.duration.Write(&m); err != nil || m.Histogram == nil {
		return descend.Histogram{}
	}
	h := m.Histogram
	out := descend.Histogram{Count: h.GetSampleCount(), Sum: h.GetSampleSum()}
	for _, b := range h.Bucket {
		out.Bounds = append(out.Bounds, b.GetUpperBound())
		out.Counts = append(out.Counts, b.GetCumulativeCount())
	}
	return out
}

// openFDs counts this process's open descriptors (for leak checks in soak runs).
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// goroutines is runtime.NumGoroutine, named for the stats it feeds.
func goroutines() int { return runtime.NumGoroutine() }
