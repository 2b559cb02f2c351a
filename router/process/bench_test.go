package process

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// benchRoute measures the public handler end to end for requests whose owner is the
// accepting router (local: router → app) or another (forwarded: router → mux → router →
// app). The app is an httptest server on loopback in both cases.
func benchRoute(b *testing.B, forwarded bool) { benchCluster(b, forwarded, false) }

// benchCluster is benchRoute, with the owner's app an in-process handler when embedded
// (then a forwarded request costs one mux hop and nothing else).
func benchCluster(b *testing.B, forwarded, embedded bool) {
	tc := newTestCluster(b, 2, time.Second)
	for _, r := range tc.routers {
		if embedded {
			r.handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Length", "2")
				w.Write([]byte("ok"))
			})
		}
	}
	benchServe(b, tc, benchKey(forwarded))
}

func BenchmarkRouteLocal(b *testing.B)     { benchRoute(b, false) }
func BenchmarkRouteForwarded(b *testing.B) { benchRoute(b, true) }

func BenchmarkEmbeddedLocal(b *testing.B)     { benchCluster(b, false, true) }
func BenchmarkEmbeddedForwarded(b *testing.B) { benchCluster(b, true, true) }

// benchKey is a key that router 0 of a two-router cluster serves locally, or forwards to
// router 1.
func benchKey(forwarded bool) string {
	if forwarded {
		return keyOwnedBy(1, 2)
	}
	return keyOwnedBy(0, 2)
}

// benchServe sends b.N requests for key to router 0's public handler, in parallel, each of
// which must answer 200.
func benchServe(b *testing.B, tc *testCluster, key string) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("X-Olio-Key", key)
			rec := httptest.NewRecorder()
			tc.routers[0].ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
	})
}
