package httprules

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
		if g := allow.Trusts(addr); g != want {
			t.Errorf("Trusts(%q) = %v, want %v", addr, g, want)
		}
	}
	if none, err := ParseForwardedAllowIPs(""); err != nil || none.Trusts("127.0.0.1:1") {
		t.Errorf(`"" = %v, %v: want nobody trusted`, none, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "localhost", "10.0.0.1,", "10.0.0", "*", "fe80::1%eth0", "10.0.0.0/8 10.1.0.0/16"} {
		_, err := ParseForwardedAllowIPs(bad)
		if err == nil || !strings.Contains(err.Error(), "--forwarded-allow-ips") || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParseForwardedAllowIPs(%q) = %v: want an error naming the flag and the value", bad, err)
		}
	}
}

// TestForwardedOf: from a client not trusted, olio's own fields; from a trusted front, the
// front's fields appended to and passed; from a peer router, the fields as they came.
func TestForwardedOf(t *testing.T) {
	front := http.Header{
		"X-Forwarded-For":   {"203.0.113.7", "198.51.100.1"},
		"X-Forwarded-Host":  {"shop.example"},
		"X-Forwarded-Proto": {"https"},
		"Forwarded":         {"for=203.0.113.7;proto=https"},
	}
	request := func(remote string, h http.Header) *http.Request {
		req := httptest.NewRequest("GET", "http://app.example/x", nil)
		req.RemoteAddr, req.Header = remote, h
		return req
	}
	for _, tc := range []struct {
		name              string
		req               *http.Request
		fromPeer, trusted bool
		want              Forwarded
	}{
		{"untrusted: replaced", request("192.0.2.9:4000", front.Clone()), false, false,
			Forwarded{For: "192.0.2.9", Host: "app.example", Proto: "http"}},
		{"trusted: appended and passed", request("127.0.0.1:4000", front.Clone()), false, true,
			Forwarded{For: "203.0.113.7, 198.51.100.1, 127.0.0.1", Host: "shop.example", Proto: "https", Forwarded: "for=203.0.113.7;proto=https"}},
		{"trusted, without fields: olio's own", request("127.0.0.1:4000", http.Header{}), false, true,
			Forwarded{For: "127.0.0.1", Host: "app.example", Proto: "http"}},
		{"trusted, no client address: the front's list", request("@", front.Clone()), false, true,
			Forwarded{For: "203.0.113.7, 198.51.100.1", Host: "shop.example", Proto: "https", Forwarded: "for=203.0.113.7;proto=https"}},
		{"from a peer router: as it came", request("", front.Clone()), true, false,
			Forwarded{For: "203.0.113.7, 198.51.100.1", Host: "shop.example", Proto: "https", Forwarded: "for=203.0.113.7;proto=https"}},
	} {
		got := ForwardedOf(tc.req, tc.fromPeer, tc.trusted)
		if got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
		var set []string
		got.Each(func(k, _ string) { set = append(set, k) })
		if got.Count() != len(set) {
			t.Errorf("%s: Count %d, Each gives %v", tc.name, got.Count(), set)
		}
		h := http.Header{"X-Forwarded-For": {"stale"}, "X-Forwarded-Host": {"stale"}, "Forwarded": {"stale"}, "Accept": {"*/*"}}
		SetForwarded(h, got)
		if h.Get("Accept") != "*/*" || h.Get("X-Forwarded-For") != tc.want.For || h.Get("X-Forwarded-Host") != tc.want.Host ||
			h.Get("X-Forwarded-Proto") != tc.want.Proto || h.Get("Forwarded") != tc.want.Forwarded {
			t.Errorf("%s: SetForwarded gave %v", tc.name, h)
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
	DropLookalikes(h, "X-User")
	want := []string{"Accept", "X-Olio-Key", "X_custom_thing"}
	var got []string
	for k := range h {
		got = append(got, k)
	}
	if !sameSet(got, want) {
		t.Errorf("after DropLookalikes: %v, want %v", got, want)
	}
	h = http.Header{"X_user": {"a"}}
	DropLookalikes(h, "X_user") // the key's own spelling stays
	if len(h) != 1 {
		t.Errorf("DropLookalikes dropped the key header itself")
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
