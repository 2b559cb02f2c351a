package keys

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseKeySpec(t *testing.T) {
	tests := []struct {
		in   string
		want Spec
		str  string
	}{
		{"header:X-User", Spec{Kind: Header, Name: "X-User"}, "header:X-User"},
		{"header:x-user", Spec{Kind: Header, Name: "X-User"}, "header:X-User"},
		{"HEADER:X-OLIO-KEY", Spec{Kind: Header, Name: "X-Olio-Key"}, "header:X-Olio-Key"},
		{"header:x_weird!", Spec{Kind: Header, Name: "X_weird!"}, "header:X_weird!"},
		{"query:user", Spec{Kind: Query, Name: "user"}, "query:user"},
		{"query:User", Spec{Kind: Query, Name: "User"}, "query:User"},
		{"query:a:b c", Spec{Kind: Query, Name: "a:b c"}, "query:a:b c"},
		{"cookie:session", Spec{Kind: Cookie, Name: "session"}, "cookie:session"},
		{"Cookie:SID", Spec{Kind: Cookie, Name: "SID"}, "cookie:SID"},
		{"path:1", Spec{Kind: PathSeg, N: 1}, "path:1"},
		{"path:12", Spec{Kind: PathSeg, N: 12}, "path:12"},
		{"path:007", Spec{Kind: PathSeg, N: 7}, "path:7"},
		{"path:9", Spec{Kind: PathSeg, N: 9}, "path:9"},
		{"path:000019", Spec{Kind: PathSeg, N: 19}, "path:19"},
		{"path:65536", Spec{Kind: PathSeg, N: 65536}, "path:65536"},
		{"path", Spec{Kind: Path}, "path"},
		{"Path", Spec{Kind: Path}, "path"},
		{"host", Spec{Kind: Host}, "host"},
		{"HOST", Spec{Kind: Host}, "host"},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if g, e := got.String(), tt.str; g != e {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.in, g, e)
		}
	}
}

func TestParseKeySpecErrors(t *testing.T) {
	tests := []struct{ in, why string }{
		{"", `empty`},
		{":x", `missing source before ":"`},
		{"foo:x", `unknown source "foo"`},
		{"foo", `unknown source "foo"`},
		{"headers:X", `unknown source "headers"`},
		{" header:X", `unknown source " header"`},
		{"header", `header needs a name`},
		{"header:", `header needs a name`},
		{"header: X", `header name " X" has invalid character " "`},
		{"header:X:Y", `header name "X:Y" has invalid character ":"`},
		{"header:Ünï", `header name "Ünï" has invalid character "\xc3"`},
		{"query", `query needs a parameter name`},
		{"query:", `query needs a parameter name`},
		{"cookie", `cookie needs a name`},
		{"cookie:", `cookie needs a name`},
		{"cookie:a=b", `cookie name "a=b" has invalid character "="`},
		{"cookie:=a", `cookie name "=a" has invalid character "="`},
		{"path:", `path segment "" is not a whole number from 1`},
		{"path:0", `path segment "0" is not a whole number from 1`},
		{"path:-1", `path segment "-1" is not a whole number from 1`},
		{"path:+1", `path segment "+1" is not a whole number from 1`},
		{"path: 1", `path segment " 1" is not a whole number from 1`},
		{"path:x", `path segment "x" is not a whole number from 1`},
		{"path:1.5", `path segment "1.5" is not a whole number from 1`},
		{"path:65537", `path segment "65537" is not a whole number from 1`},
		{"path:99999999999999999999", `path segment "99999999999999999999" is not a whole number from 1`},
		{"host:", `host takes no argument`},
		{"host:x", `host takes no argument`},
	}
	for _, tt := range tests {
		spec, err := Parse(tt.in)
		if err == nil {
			t.Errorf("Parse(%q) = %v, want an error", tt.in, spec)
			continue
		}
		if !errors.Is(err, ErrBadSpec) {
			t.Errorf("Parse(%q) error %q does not wrap ErrBadSpec", tt.in, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, tt.why) || !strings.HasSuffix(msg, "; "+validKeyForms) {
			t.Errorf("Parse(%q) error %q, want it to say %q and list the valid forms", tt.in, msg, tt.why)
		}
	}
	_, err := Parse("foo:x")
	const want = `--key "foo:x": unknown source "foo"; use header:NAME, query:NAME, cookie:NAME, path:N, path or host`
	if g := err.Error(); g != want {
		t.Errorf("error = %q, want %q", g, want)
	}
}

func TestKeySpecStringInvalid(t *testing.T) {
	if g, e := (Spec{}).String(), "invalid Spec"; g != e {
		t.Errorf("zero Spec String() = %q, want %q", g, e)
	}
	if g, e := Kind(99).String(), "Kind(99)"; g != e {
		t.Errorf("Kind(99).String() = %q, want %q", g, e)
	}
}

func mustSpec(t testing.TB, s string) Spec {
	t.Helper()
	k, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestExtract(t *testing.T) {
	type req struct {
		target  string // request-target: path and query
		host    string
		headers []string // name, value, name, value...
	}
	tests := []struct {
		spec string
		req  req
		want string // "" means missing: Extract returns false
	}{
		// header
		{"header:X-User", req{target: "/", headers: []string{"X-User", "alice"}}, "alice"},
		{"header:x-user", req{target: "/", headers: []string{"x-USER", "alice"}}, "alice"},
		{"header:X-User", req{target: "/", headers: []string{"X-User", "alice", "X-User", "bob"}}, "alice"},
		{"header:X-User", req{target: "/", headers: []string{"X-User", " spaced out "}}, " spaced out "},
		{"header:X-User", req{target: "/"}, ""},
		{"header:X-User", req{target: "/", headers: []string{"X-Other", "alice"}}, ""},
		{"header:X-User", req{target: "/", headers: []string{"X-User", ""}}, ""},
		// query
		{"query:user", req{target: "/?user=alice"}, "alice"},
		{"query:user", req{target: "/?a=1&user=alice&b=2"}, "alice"},
		{"query:user", req{target: "/?user=alice&user=bob"}, "alice"},
		{"query:user", req{target: "/?user=al%20ice+b"}, "al ice b"},
		{"query:user", req{target: "/?us%65r=alice"}, "alice"},
		{"query:user", req{target: "/?User=alice"}, ""},
		{"query:user", req{target: "/?user"}, ""},
		{"query:user", req{target: "/?user="}, ""},
		{"query:user", req{target: "/?user=&user=bob"}, ""},
		{"query:user", req{target: "/?username=alice"}, ""},
		{"query:user", req{target: "/"}, ""},
		{"query:user", req{target: "/?user=a;b&user=bob"}, "bob"}, // ";" pair skipped, as url.ParseQuery does
		{"query:user", req{target: "/?user=%zz&user=bob"}, "bob"}, // bad escape skipped
		{"query:a b", req{target: "/?a+b=1"}, "1"},
		// cookie
		{"cookie:sid", req{target: "/", headers: []string{"Cookie", "sid=abc"}}, "abc"},
		{"cookie:sid", req{target: "/", headers: []string{"Cookie", "a=1; sid=abc; b=2"}}, "abc"},
		{"cookie:sid", req{target: "/", headers: []string{"Cookie", "a=1;sid=abc"}}, "abc"},
		{"cookie:sid", req{target: "/", headers: []string{"Cookie", `sid="abc"`}}, "abc"},
		{"cookie:sid", req{target: "/", headers: []string{"Cookie", "a=1", "Cookie", "sid=second"}}, "second"},
		{"cookie:sid", req{target: "/", headers: []string{"Cookie", "sid=first; sid=second"}}, "first"},
		{"cookie:sid", req{target: "/", headers: []string{"Cookie", "SID=abc"}}, ""},
		{"cookie:sid", req{target: "/", headers: []string{"Cookie", "sidx=abc; xsid=abc"}}, ""},
		{"cookie:sid", req{target: "/", headers: []string{"Cookie", "sid="}}, ""},
		{"cookie:sid", req{target: "/", headers: []string{"Cookie", `sid=""`}}, ""},
		{"cookie:sid", req{target: "/", headers: []string{"Cookie", `sid="`}}, `"`}, // one quote is not a quoted value (nor a reason to panic)
		{"cookie:sid", req{target: "/", headers: []string{"Cookie", "sid"}}, ""},
		{"cookie:sid", req{target: "/"}, ""},
		// path:N
		{"path:1", req{target: "/users/42/posts"}, "users"},
		{"path:2", req{target: "/users/42/posts"}, "42"},
		{"path:3", req{target: "/users/42/posts?x=1"}, "posts"},
		{"path:2", req{target: "/users/42/"}, "42"},
		{"path:3", req{target: "/users/42/"}, ""},
		{"path:4", req{target: "/users/42/posts"}, ""},
		{"path:1", req{target: "/"}, ""},
		// Cleaned as frameworks serve it: empty segments skipped, dot segments removed
		// (RFC 3986 §5.2.4), never above the root; legitimate dots kept.
		{"path:2", req{target: "/rooms/kitchen"}, "kitchen"},
		{"path:2", req{target: "/rooms//kitchen"}, "kitchen"},
		{"path:2", req{target: "//rooms///kitchen//"}, "kitchen"},
		{"path:2", req{target: "/x/../rooms/kitchen"}, "kitchen"},
		{"path:2", req{target: "/rooms/./kitchen"}, "kitchen"},
		{"path:2", req{target: "/rooms/kitchen/.."}, ""},
		{"path:2", req{target: "/../../rooms/kitchen"}, "kitchen"},
		{"path:2", req{target: "/rooms/%2e%2e/x/kitchen"}, "kitchen"}, // r.URL.Path is decoded
		{"path:1", req{target: "/./."}, ""},
		{"path:2", req{target: "/rooms/.hidden"}, ".hidden"},
		{"path:2", req{target: "/rooms/...x"}, "...x"},
		{"path:2", req{target: "/rooms/kitchen.v2/"}, "kitchen.v2"},
		{"path:3", req{target: "/a//b"}, ""},
		{"path:2", req{target: "/a/caf%C3%A9"}, "café"},
		{"path:2", req{target: "/a/b%2Fc"}, "b"}, // r.URL.Path is decoded
		// path
		{"path", req{target: "/users/42?x=1"}, "/users/42"},
		{"path", req{target: "/"}, "/"},
		{"path", req{target: "/rooms//kitchen"}, "/rooms/kitchen"},
		{"path", req{target: "/x/../rooms/./kitchen"}, "/rooms/kitchen"},
		{"path", req{target: "/rooms/kitchen/"}, "/rooms/kitchen/"}, // a trailing "/" is kept
		{"path", req{target: "/rooms/kitchen//"}, "/rooms/kitchen/"},
		{"path", req{target: "/rooms/kitchen/x/.."}, "/rooms/kitchen/"}, // as RFC 3986 §5.2.4
		{"path", req{target: "/rooms/kitchen/."}, "/rooms/kitchen/"},
		{"path", req{target: "/.."}, "/"},
		{"path", req{target: "//"}, "/"},
		{"path", req{target: "/a.b/c..d/.e"}, "/a.b/c..d/.e"},
		// host
		{"host", req{target: "/", host: "example.com"}, "example.com"},
		{"host", req{target: "/", host: "Example.COM:8080"}, "example.com"},
		{"host", req{target: "/", host: "127.0.0.1:80"}, "127.0.0.1"},
		{"host", req{target: "/", host: "[::1]:8080"}, "::1"},
		{"host", req{target: "/", host: "[::1]"}, "::1"},
		{"host", req{target: "/", host: "[FE80::1]"}, "fe80::1"},
		{"host", req{target: "/", host: "::1"}, "::1"},
		{"host", req{target: "/", host: "example.com:"}, "example.com"},
		{"host", req{target: "/", host: ":8080"}, ""},
		{"host", req{target: "/", host: "A.example:9090"}, "a.example"}, // A, Z and 9: the ends of the ranges
		{"host", req{target: "/", host: "Z.example"}, "z.example"},
		{"host", req{target: "/", host: "Ex.AZ"}, "ex.az"},
		{"host", req{target: "/", host: ""}, ""},
		{"host", req{target: "/", host: "example.com."}, "example.com"}, // the root's dot
		{"host", req{target: "/", host: "Example.COM.:8080"}, "example.com"},
		{"host", req{target: "/", host: "EXAMPLE.com.:"}, "example.com"},
		{"host", req{target: "/", host: "127.0.0.1.:80"}, "127.0.0.1"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, tt.req.target, nil)
		r.Host = tt.req.host
		for i := 0; i+1 < len(tt.req.headers); i += 2 {
			r.Header.Add(tt.req.headers[i], tt.req.headers[i+1])
		}
		got, ok := mustSpec(t, tt.spec).Extract(r)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("%s on %s host=%q headers=%q: got (%q, %v), want %q", tt.spec, tt.req.target, tt.req.host, tt.req.headers, got, ok, tt.want)
		}
	}
}

// The hot path of every request: no allocation for the common forms of every kind.
func TestExtractAllocs(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/rooms/42/chat?a=1&user=alice", nil)
	r.Host = "chat.example.com:8080"
	r.Header.Set("X-User", "alice")
	r.Header.Set("Cookie", "theme=dark; sid=abc123")
	for _, spec := range []string{"header:X-User", "query:user", "cookie:sid", "path:2", "path", "host"} {
		k := mustSpec(t, spec)
		if n := testing.AllocsPerRun(100, func() {
			key, _ := k.Extract(r)
			Owner(key, 8)
		}); n != 0 {
			t.Errorf("%s: Extract and Owner allocate %v times per request, want 0", spec, n)
		}
	}
}

func benchmarkExtractOwner(b *testing.B, spec string, r *http.Request) {
	k := mustSpec(b, spec)
	if _, ok := k.Extract(r); !ok {
		b.Fatalf("%s: no key in the request", spec)
	}
	b.ReportAllocs()
	for b.Loop() {
		key, _ := k.Extract(r)
		Owner(key, 8)
	}
}

func BenchmarkExtractOwnerHeader(b *testing.B) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Accept", "*/*")
	r.Header.Set("User-Agent", "bench")
	r.Header.Set("X-User", "user-1234567")
	benchmarkExtractOwner(b, "header:X-User", r)
}

func BenchmarkExtractOwnerQuery(b *testing.B) {
	r := httptest.NewRequest(http.MethodGet, "/search?q=olio&page=2&user=user-1234567", nil)
	benchmarkExtractOwner(b, "query:user", r)
}

func BenchmarkExtractOwnerCookie(b *testing.B) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Cookie", "theme=dark; lang=en; sid=user-1234567; _ga=GA1.2.3")
	benchmarkExtractOwner(b, "cookie:sid", r)
}

// TestCleanPathAllocs: a path that is already clean costs no allocation.
func TestCleanPathAllocs(t *testing.T) {
	for _, p := range []string{"/", "/rooms/kitchen", "/rooms/kitchen/", "/a.b/c..d", "*", ""} {
		if got := cleanPath(p); got != p {
			t.Errorf("cleanPath(%q) = %q, want it unchanged", p, got)
		}
		if n := testing.AllocsPerRun(100, func() { cleanPath(p) }); n != 0 {
			t.Errorf("cleanPath(%q) allocates %v times", p, n)
		}
	}
}

func BenchmarkExtractOwnerPathSegment(b *testing.B) {
	r := httptest.NewRequest(http.MethodGet, "/rooms/user-1234567/messages", nil)
	benchmarkExtractOwner(b, "path:2", r)
}
