package process

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/olio-dev/olio/router/internal/httprules"
	"github.com/olio-dev/olio/router/internal/peerwire"
)

// forwardedRequest is a public request from remote carrying the fields in h, on a
// connection whose peer is trusted or not.
func forwardedRequest(remote string, trusted bool, h http.Header) *http.Request {
	req := httptest.NewRequest("GET", "http://app.example/x", nil)
	req.RemoteAddr = remote
	req.Header = h
	info := &connInfo{}
	info.frontTrusted.Store(trusted)
	return req.WithContext(context.WithValue(req.Context(), connInfoKey{}, info))
}

func TestForwardedOf(t *testing.T) {
	front := http.Header{
		"X-Forwarded-For":   {"203.0.113.7", "198.51.100.1"},
		"X-Forwarded-Host":  {"shop.example"},
		"X-Forwarded-Proto": {"https"},
		"Forwarded":         {"for=203.0.113.7;proto=https"},
	}
	for _, tc := range []struct {
		name string
		req  *http.Request
		want httprules.Forwarded
	}{
		{"untrusted: replaced", forwardedRequest("192.0.2.9:4000", false, front.Clone()),
			httprules.Forwarded{For: "192.0.2.9", Host: "app.example", Proto: "http"}},
		{"trusted: appended and passed", forwardedRequest("127.0.0.1:4000", true, front.Clone()),
			httprules.Forwarded{For: "203.0.113.7, 198.51.100.1, 127.0.0.1", Host: "shop.example", Proto: "https", Forwarded: "for=203.0.113.7;proto=https"}},
		{"trusted, without fields: olio's own", forwardedRequest("127.0.0.1:4000", true, http.Header{}),
			httprules.Forwarded{For: "127.0.0.1", Host: "app.example", Proto: "http"}},
		{"no connection info: untrusted", func() *http.Request {
			r := httptest.NewRequest("GET", "http://app.example/x", nil)
			r.RemoteAddr, r.Header = "192.0.2.9:4000", front.Clone()
			return r
		}(), httprules.Forwarded{For: "192.0.2.9", Host: "app.example", Proto: "http"}},
		{"from a peer router: as it came", func() *http.Request {
			r := forwardedRequest("", false, http.Header{"X-Forwarded-For": {"203.0.113.7, 127.0.0.1"}, "X-Forwarded-Host": {"shop.example"}, "X-Forwarded-Proto": {"https"}, "Forwarded": {"for=x"}})
			return r.WithContext(context.WithValue(r.Context(), fromPeer, true))
		}(), httprules.Forwarded{For: "203.0.113.7, 127.0.0.1", Host: "shop.example", Proto: "https", Forwarded: "for=x"}},
	} {
		if g := forwardedOf(tc.req); g != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, g, tc.want)
		}
		h := http.Header{"X-Forwarded-For": {"stale"}, "Forwarded": {"stale"}, "Accept": {"*/*"}}
		httprules.SetForwarded(h, forwardedOf(tc.req))
		if h.Get("Accept") != "*/*" || h.Get("X-Forwarded-For") != tc.want.For || h.Get("Forwarded") != tc.want.Forwarded {
			t.Errorf("%s: SetForwarded gave %v", tc.name, h)
		}
	}
}

// TestForwardedSameOnEveryLeg: the peer leg sends the forwarded fields forwardedOf decides,
// which serveApp gives the app leg (whose own test, appleg's TestRequestForwardedFields,
// checks it sends them as given).
func TestForwardedSameOnEveryLeg(t *testing.T) {
	for _, trusted := range []bool{false, true} {
		req := forwardedRequest("127.0.0.1:4000", trusted, http.Header{
			"X-Forwarded-For": {"203.0.113.7"}, "X-Forwarded-Proto": {"https"}, "Forwarded": {"for=203.0.113.7"},
		})
		want := http.Header{}
		httprules.SetForwarded(want, forwardedOf(req))
		// The peer leg: decode the head appendRequestHead writes (appendForwardHeader's header).
		head, err := peerwire.DecodeRequestHead(string(appendRequestHead(nil, req, false, "")[peerwire.HeaderSize:]))
		if err != nil {
			t.Fatal(err)
		}
		peer := head.Header
		for leg, h := range map[string]http.Header{"peer": peer} {
			got := http.Header{}
			for _, k := range httprules.ForwardedNames {
				if v, ok := h[k]; ok {
					got[k] = v
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("trusted %v: the %s leg sends %v, want %v", trusted, leg, got, want)
			}
		}
	}
}

// TestRequestHopsDropOlioFields: the request filter every leg uses drops olio's own request
// fields, whose names package httprules spells out too.
func TestRequestHopsDropOlioFields(t *testing.T) {
	for _, k := range []string{HeaderIndex, HeaderSecret, headerTiming} {
		if !httprules.RequestHops.Drop(k) {
			t.Errorf("a forwarded request carries the client's %s on", k)
		}
	}
}
