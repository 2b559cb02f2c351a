package httprules

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// FuzzOutboundURI: the request URI every leg sends never panics on any query, passes a query
// as it came exactly when net/url parses it without error (cleanQuery), and otherwise keeps
// what parses of it (as ReverseProxy does), in a form that parses cleanly.
func FuzzOutboundURI(f *testing.F) {
	for _, q := range []string{
		"", "q=%4", "q=%", "%", "%4", "%41", "q=%41", "q=a%4", "q=%41%4", "q=%zz", "q=%4g", "q=%g4",
		"a=1&b=2", "a;b=1", "a=1;b", "q=%%41", "%%", "q=%41&r=%", "q=+&r=%20", "a=%e2%82%ac",
		"&&=&", "=", "q=%0", strings.Repeat("&", maxQueryParams-1), strings.Repeat("&", maxQueryParams),
	} {
		f.Add("/p", q)
	}
	f.Add("/a%2Fb", "x=1")
	f.Fuzz(func(t *testing.T, path, q string) {
		u := &url.URL{Path: path, RawQuery: q}
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("OutboundURI with the query %q panicked: %v", q, p)
			}
		}()
		out := OutboundURI(u)
		_, perr := url.ParseQuery(q)
		if clean := cleanQuery(q); clean != (perr == nil) {
			t.Fatalf("cleanQuery(%q) = %v, but url.ParseQuery says %v", q, clean, perr)
		}
		if perr == nil {
			if out != u.RequestURI() {
				t.Fatalf("OutboundURI with the clean query %q = %q, want it as it came: %q", q, out, u.RequestURI())
			}
			return
		}
		_, rawq, _ := strings.Cut(out, "?")
		got, err := url.ParseQuery(rawq)
		if err != nil {
			t.Fatalf("OutboundURI with the query %q = %q, whose query does not parse: %v", q, out, err)
		}
		want, _ := url.ParseQuery(q)
		if len(want) == 0 {
			want = url.Values{}
		}
		if len(got) == 0 {
			got = url.Values{}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("OutboundURI with the query %q = %q: values %v, want what parses of it, %v", q, out, got, want)
		}
	})
}
