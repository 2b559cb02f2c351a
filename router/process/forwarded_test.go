package process

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestParseForwardedAllowIPs(t *testing.T) {
	allow, err := ParseForwardedAllowIPs(" 127.0.0.1, 10.0.0.0/8,fd00::/8 ,::1")
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"127.0.0.1:5000":          true,
		"127.0.0.2:5000":          false,
		"10.1.2.3:80":             true,
		"11.0.0.1:80":             false,
		"[fd00::5]:80":            true,
		"[fe80::1]:80":            false,
		"[::1]:80":                true,
		"[::ffff:10.0.0.1]:80":    true, // an IPv4 client on a dual-stack socket
		"not an address":          false,
		"@":                       false,
		"[fd00::5%eth0]:80":       false,
		"127.0.0.1":               false, // no port: not a RemoteAddr
		"192.168.1.1:1, 10.0.0.1": false,
	} {
		if g := allow.trusts(addr); g != want {
			t.Errorf("trusts(%q) = %v, want %v", addr, g, want)
		}
	}
	if none, err := ParseForwardedAllowIPs(""); err != nil || none.trusts("127.0.0.1:1") {
		t.Errorf(`"" = %v, %v: want nobody trusted`, none, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "localhost", "10.0.0.1,", "10.0.0", "*", "fe80::1%eth0", "10.0.0.0/8 10.1.0.0/16"} {
		_, err := ParseForwardedAllowIPs(bad)
		if err == nil || !strings.Contains(err.Error(), "--forwarded-allow-ips") || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParseForwardedAllowIPs(%q) = %v: want an error naming the flag and the value", bad, err)
		}
	}
}

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
		want forwardedFields
	}{
		{"untrusted: replaced", forwardedRequest("192.0.2.9:4000", false, front.Clone()),
			forwardedFields{For: "192.0.2.9", Host: "app.example", Proto: "http"}},
		{"trusted: appended and passed", forwardedRequest("127.0.0.1:4000", true, front.Clone()),
			forwardedFields{For: "203.0.113.7, 198.51.100.1, 127.0.0.1", Host: "shop.example", Proto: "https", Forwarded: "for=203.0.113.7;proto=https"}},
		{"trusted, without fields: olio's own", forwardedRequest("127.0.0.1:4000", true, http.Header{}),
			forwardedFields{For: "127.0.0.1", Host: "app.example", Proto: "http"}},
		{"no connection info: untrusted", func() *http.Request {
			r := httptest.NewRequest("GET", "http://app.example/x", nil)
			r.RemoteAddr, r.Header = "192.0.2.9:4000", front.Clone()
			return r
		}(), forwardedFields{For: "192.0.2.9", Host: "app.example", Proto: "http"}},
		{"from a peer router: as it came", func() *http.Request {
			r := forwardedRequest("", false, http.Header{"X-Forwarded-For": {"203.0.113.7, 127.0.0.1"}, "X-Forwarded-Host": {"shop.example"}, "X-Forwarded-Proto": {"https"}, "Forwarded": {"for=x"}})
			return r.WithContext(context.WithValue(r.Context(), fromPeer, true))
		}(), forwardedFields{For: "203.0.113.7, 127.0.0.1", Host: "shop.example", Proto: "https", Forwarded: "for=x"}},
	} {
		if g := forwardedOf(tc.req); g != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, g, tc.want)
		}
		h := http.Header{"X-Forwarded-For": {"stale"}, "Forwarded": {"stale"}, "Accept": {"*/*"}}
		setForwarded(h, forwardedOf(tc.req))
		if h.Get("Accept") != "*/*" || h.Get("X-Forwarded-For") != tc.want.For || h.Get("Forwarded") != tc.want.Forwarded {
			t.Errorf("%s: setForwarded gave %v", tc.name, h)
		}
	}
}

// TestForwardedSameOnEveryLeg: the app fast path, ReverseProxy's Rewrite and the peer leg
// send the same forwarded fields for one request.
func TestForwardedSameOnEveryLeg(t *testing.T) {
	for _, trusted := range []bool{false, true} {
		req := forwardedRequest("127.0.0.1:4000", trusted, http.Header{
			"X-Forwarded-For": {"203.0.113.7"}, "X-Forwarded-Proto": {"https"}, "Forwarded": {"for=203.0.113.7"},
		})
		want := http.Header{}
		setForwarded(want, forwardedOf(req))
		// The peer leg: decode what appendForwardHeader writes.
		d := &wireReader{s: string(appendForwardHeader(nil, req, ""))}
		peer := d.header(nil)
		if err := d.done(); err != nil {
			t.Fatal(err)
		}
		// The app fast path.
		out := fasthttp.AcquireRequest()
		defer fasthttp.ReleaseRequest(out)
		fastRequest(out, req, 1)
		fast := http.Header{}
		for _, k := range forwardedNames {
			if v := out.Header.Peek(k); v != nil {
				fast[k] = []string{string(v)}
			}
		}
		for leg, h := range map[string]http.Header{"peer": peer, "fast": fast} {
			got := http.Header{}
			for _, k := range forwardedNames {
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

func TestDropLookalikes(t *testing.T) {
	h := http.Header{
		"X_olio_index":      {"0"},
		"X_olio_secret":     {"guess"},
		"X-Olio-Key":        {"alice"},
		"X_olio_key":        {"bob"},
		"X_forwarded_for":   {"1.2.3.4"},
		"X_forwarded_proto": {"https"},
		"X-Forwarded_host":  {"evil"},
		"X_user":            {"mallory"},
		"X_custom_thing":    {"kept"},
		"Accept":            {"*/*"},
	}
	dropLookalikes(h, "X-User")
	want := []string{"Accept", "X-Olio-Key", "X_custom_thing"}
	var got []string
	for k := range h {
		got = append(got, k)
	}
	if !sameSet(got, want) {
		t.Errorf("after dropLookalikes: %v, want %v", got, want)
	}
	h = http.Header{"X_user": {"a"}}
	dropLookalikes(h, "X_user") // the key's own spelling stays
	if len(h) != 1 {
		t.Errorf("dropLookalikes dropped the key header itself")
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, s := range a {
		m[s] = true
	}
	for _, s := range b {
		if !m[s] {
			return false
		}
	}
	return true
}
