package router

import (
	"fmt"
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
	key := ""
	for i := 0; ; i++ {
		key = fmt.Sprintf("k%d", i)
		if (Owner(key, 2) == 1) == forwarded {
			break
		}
	}
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

func BenchmarkRouteLocal(b *testing.B)     { benchRoute(b, false) }
func BenchmarkRouteForwarded(b *testing.B) { benchRoute(b, true) }

func BenchmarkEmbeddedLocal(b *testing.B)     { benchCluster(b, false, true) }
func BenchmarkEmbeddedForwarded(b *testing.B) { benchCluster(b, true, true) }
