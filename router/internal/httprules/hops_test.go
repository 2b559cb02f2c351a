package httprules

import "testing"

// TestHops: hop-by-hop fields and those the Connection field names never cross; on a
// request, neither do the client's forwarded fields, Expect and olio's own.
func TestHops(t *testing.T) {
	requestOnly := []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Expect",
		"X-Olio-Index", "X-Olio-Secret", "X-Olio-Timing"}
	for _, request := range []bool{false, true} {
		f := Hops([]string{"keep-alive, x-private ,", " X-Other"}, request)
		for _, k := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
			"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "X-Private", "X-Other"} {
			if !f.Drop(k) {
				t.Errorf("request %v: %s crosses", request, k)
			}
		}
		for _, k := range requestOnly {
			if f.Drop(k) != request || Hops(nil, request).Drop(k) != request {
				t.Errorf("request %v: %s dropped %v", request, k, f.Drop(k))
			}
		}
		for _, k := range []string{"Accept", "X-Olio-Key", "Content-Length", "X-Private-Not"} {
			if f.Drop(k) {
				t.Errorf("request %v: %s dropped", request, k)
			}
		}
		if Hops(nil, request).Drop("X-Private") {
			t.Errorf("request %v: without a Connection field, X-Private dropped", request)
		}
	}
	if Hops(nil, true) != RequestHops || Hops([]string{}, false) != ResponseHops {
		t.Errorf("a header without a Connection field does not take the shared filters")
	}
	var none *HopFilter
	if none.Drop("Connection") {
		t.Errorf("a nil filter drops")
	}
}
