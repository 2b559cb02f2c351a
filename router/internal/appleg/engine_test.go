package appleg

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/olio-dev/olio/router/internal/httprules"
)

// TestRequestForwardedFields: the app gets the forwarded fields it is given, and none of
// the client's own.
func TestRequestForwardedFields(t *testing.T) {
	req := httptest.NewRequest("GET", "/x", nil)
	req.RemoteAddr = "127.0.0.1:4000"
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("Forwarded", "for=203.0.113.7")
	for _, trusted := range []bool{false, true} {
		fw := httprules.ForwardedOf(req, false, trusted)
		want := http.Header{}
		httprules.SetForwarded(want, fw)
		out := fasthttp.AcquireRequest()
		appRequest(out, req, 1, &fw)
		got := http.Header{}
		for _, k := range httprules.ForwardedNames {
			if v := out.Header.Peek(k); v != nil {
				got[k] = []string{string(v)}
			}
		}
		fasthttp.ReleaseRequest(out)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("trusted %v: the app is sent %v, want %v", trusted, got, want)
		}
	}
}
