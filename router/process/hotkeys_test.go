package process

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/olio-dev/olio/descend"
)

// BenchmarkCountKey measures what hot-key counting adds to a request: countKey as
// ServeHTTP calls it. "enqueue": one goroutine, which every 256 calls frees the ring's
// filled slots without counting them (a cost included in the time, about 1 ns a call), so
// that every call takes the path of a request that is counted, as when the drainer keeps
// up (it does up to 40,000 requests/s). "parallel": the same from GOMAXPROCS goroutines at
// once; a goroutine descheduled between claiming a slot and filling it holds up the
// others' drain, and at this rate the ring then fills within microseconds, so part of the
// calls take the dropping path. "full": nothing drains, every call drops. "dropped/op" is
// the share of calls not counted.
func BenchmarkCountKey(b *testing.B) {
	b.Run("enqueue", func(b *testing.B) { benchCountKey(b, true, false) })
	b.Run("parallel", func(b *testing.B) { benchCountKey(b, true, true) })
	b.Run("full", func(b *testing.B) { benchCountKey(b, false, true) })
}

func benchCountKey(b *testing.B, drain, parallel bool) {
	set, err := newSettings(&descend.Config{Key: "header:X-Olio-Key", KeyStats: descend.KeyStatsOn})
	if err != nil {
		b.Fatal(err)
	}
	r := newRouter(0, set, slog.New(slog.DiscardHandler))
	keys := make([]string, 1024)
	hashes := make([]uint64, len(keys))
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%d", i*i%997)
		hashes[i] = xxhash.Sum64String(keys[i])
	}
	loop := func(next func() bool) {
		i := rand.IntN(len(keys))
		for n := 1; next(); n++ {
			i = (i + 1) % len(keys)
			r.countKey(hashes[i], keys[i], 0)
			if drain && n%256 == 0 {
				r.hot.Discard()
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	if parallel {
		b.RunParallel(func(pb *testing.PB) { loop(pb.Next) })
	} else {
		loop(b.Loop)
	}
	b.StopTimer()
	b.ReportMetric(float64(r.hot.Dropped())/float64(b.N), "dropped/op")
}

// BenchmarkCountForwarded measures the same for a request a peer forwarded, whose key
// is read and hashed again (the accepting router hashed it to route it).
func BenchmarkCountForwarded(b *testing.B) {
	set, err := newSettings(&descend.Config{Key: "header:X-Olio-Key", KeyStats: descend.KeyStatsOn})
	if err != nil {
		b.Fatal(err)
	}
	r := newRouter(0, set, slog.New(slog.DiscardHandler))
	r.members.Store(&membership{epoch: 1, workers: 1})
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-Olio-Key", "user-12345")
	b.ReportAllocs()
	for n := 1; b.Loop(); n++ {
		r.countForwarded(req)
		if n%256 == 0 {
			r.hot.Discard()
		}
	}
	if d := r.hot.Dropped(); d != 0 {
		b.Errorf("%d requests dropped", d)
	}
}
