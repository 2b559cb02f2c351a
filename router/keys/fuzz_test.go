package keys

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzParseKeySpec: Parse never panics, fails only with ErrBadSpec, and a spec it
// accepts prints as a string that parses back to the same spec.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"header:X-User", "header:x-olio-key", "query:user", "cookie:sid", "path:1", "path:65536",
		"path", "host", "", ":", "foo:x", "header:", "path:0", "path:+1", "host:x", "HEADER:a",
		"query:a:b", "cookie:a=b", "header:\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrBadSpec) {
				t.Fatalf("Parse(%q): error %q does not wrap ErrBadSpec", s, err)
			}
			if !strings.HasSuffix(err.Error(), validKeyForms) {
				t.Fatalf("Parse(%q): error %q does not list the valid forms", s, err)
			}
			return
		}
		again, err := Parse(k.String())
		if err != nil {
			t.Fatalf("Parse(%q) = %+v, whose String() %q does not parse: %v", s, k, k.String(), err)
		}
		if again != k {
			t.Fatalf("Parse(%q) = %+v, but its String() %q parses to %+v", s, k, k.String(), again)
		}
	})
}

// FuzzExtract: Extract never panics on any header, query, cookie, path or host, returns true
// exactly for a non-empty key, and each kind's key keeps that kind's shape.
func FuzzExtract(f *testing.F) {
	f.Add("header:X-User", "alice", "user=alice", "/rooms/42", "sid=abc", "Example.com:80")
	f.Add("query:user", "", "a=1&user=al%20ice+x;y", "/", `a=1; sid="q"`, "[::1]:8080")
	f.Add("cookie:sid", "x", "user=%zz", "/a//b/", "sid=; sid=2", "::1")
	f.Add("path:2", "", "", "", "", "")
	f.Add("path:3", "v", "&&=&", "//", ";;=;", ":")
	f.Add("path", "v", "u%", "/%2F", "sid", "[")
	f.Add("host", "v", "=", "/x", "=", "[]:")
	f.Fuzz(func(t *testing.T, spec, header, rawQuery, path, cookie, host string) {
		k, err := Parse(spec)
		if err != nil {
			return
		}
		r := &http.Request{
			Method: http.MethodGet,
			URL:    &url.URL{Path: path, RawQuery: rawQuery},
			Host:   host,
			Header: http.Header{"Cookie": {cookie}},
		}
		if k.Kind == Header && k.Name != "Cookie" {
			r.Header[k.Name] = []string{header}
		}
		key, ok := k.Extract(r)
		if ok != (key != "") {
			t.Fatalf("%s: Extract = (%q, %v): true exactly when the key is non-empty", k, key, ok)
		}
		switch k.Kind {
		case Header:
			want := header
			if k.Name == "Cookie" {
				want = cookie
			}
			if key != want {
				t.Fatalf("%s: Extract = %q, want the header's value %q", k, key, want)
			}
		case Query:
			// Agree with net/url whenever it parses the query cleanly.
			if v, err := url.ParseQuery(rawQuery); err == nil && key != v.Get(k.Name) {
				t.Fatalf("%s of %q: Extract = %q, url.ParseQuery says %q", k, rawQuery, key, v.Get(k.Name))
			}
		case Cookie:
			if !strings.Contains(cookie, key) {
				t.Fatalf("%s of %q: Extract = %q, not part of the header", k, cookie, key)
			}
		case PathSeg:
			if strings.Contains(key, "/") || !strings.Contains(path, key) {
				t.Fatalf("%s of %q: Extract = %q, not one segment of the path", k, path, key)
			}
		case Path:
			if key != cleanPath(path) || cleanPath(key) != key {
				t.Fatalf("%s: Extract = %q, want the clean %q", k, key, cleanPath(path))
			}
			if strings.HasPrefix(key, "/") && key != "/" {
				for _, seg := range strings.Split(strings.TrimSuffix(key[1:], "/"), "/") {
					if seg == "" || seg == "." || seg == ".." {
						t.Fatalf("%s of %q: Extract = %q, with an empty or dot segment", k, path, key)
					}
				}
			}
		case Host:
			if strings.ContainsFunc(key, func(c rune) bool { return 'A' <= c && c <= 'Z' }) ||
				!strings.Contains(strings.ToLower(host), strings.ToLower(key)) {
				t.Fatalf("host of %q: Extract = %q, want a lower-cased part of it", host, key)
			}
		}
		if ok {
			if o := Owner(key, 8); o < 0 || o >= 8 {
				t.Fatalf("Owner(%q, 8) = %d", key, o)
			}
		}
	})
}
