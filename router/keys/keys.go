package keys

import (
	"net/http"
	"net/textproto"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// Kind says where in a request a routing key is found.
type Kind uint8

// The sources of a routing key, one per Spec form.
const (
	Header  Kind = iota + 1 // header:NAME, the first value of request header NAME
	Query                   // query:NAME, the first value of query parameter NAME
	Cookie                  // cookie:NAME, the value of the first cookie named NAME
	PathSeg                 // path:N, the N-th segment (1-based) of the cleaned URL path
	Path                    // path, the whole cleaned URL path
	Host                    // host, the request's host, without port and trailing dot, lower-cased
)

// String returns the kind's source word as written in a spec ("header", "path", ...).
func (k Kind) String() string {
	switch k {
	case Header:
		return "header"
	case Query:
		return "query"
	case Cookie:
		return "cookie"
	case PathSeg, Path:
		return "path"
	case Host:
		return "host"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// validKeyForms ends every Parse error.
const validKeyForms = "use header:NAME, query:NAME, cookie:NAME, path:N, path or host"

// Spec says where a request's routing key is taken from: the --key flag, parsed by
// Parse. Its zero value is not valid; use Parse.
type Spec struct {
	Kind Kind
	// Name is the header (in canonical form), query parameter or cookie name; empty for other kinds.
	Name string
	// N is the 1-based path segment for PathSeg; 0 for other kinds.
	N int
}

// Parse parses a key spec, one of:
//
//	header:NAME  the first value of header NAME (matched case-insensitively)
//	query:NAME   the first value of query parameter NAME (case-sensitive, %-decoded)
//	cookie:NAME  the value of the first cookie named NAME (case-sensitive)
//	path:N       the N-th segment of the cleaned URL path (cleanPath), counted from 1
//	path         the whole cleaned URL path
//	host         the request's host, without port and trailing dot, lower-cased
//
// Path keys are taken from the path as web frameworks serve it (cleanPath): "/rooms/kitchen",
// "/rooms//kitchen", "/x/../rooms/kitchen" and "/rooms/./kitchen" are one key.
//
// The source word is case-insensitive. Errors wrap ErrBadSpec.
func Parse(s string) (Spec, error) {
	src, arg, hasArg := strings.Cut(s, ":")
	switch strings.ToLower(src) {
	case "header":
		if !hasArg || arg == "" {
			return Spec{}, specErrorf(s, "header needs a name, as in header:X-User")
		}
		if i := invalidTokenByte(arg); i >= 0 {
			return Spec{}, specErrorf(s, "header name "+strconv.Quote(arg)+" has invalid character "+strconv.Quote(arg[i:i+1]))
		}
		return Spec{Kind: Header, Name: textproto.CanonicalMIMEHeaderKey(arg)}, nil
	case "query":
		if !hasArg || arg == "" {
			return Spec{}, specErrorf(s, "query needs a parameter name, as in query:user")
		}
		return Spec{Kind: Query, Name: arg}, nil
	case "cookie":
		if !hasArg || arg == "" {
			return Spec{}, specErrorf(s, "cookie needs a name, as in cookie:session")
		}
		if i := invalidTokenByte(arg); i >= 0 {
			return Spec{}, specErrorf(s, "cookie name "+strconv.Quote(arg)+" has invalid character "+strconv.Quote(arg[i:i+1]))
		}
		return Spec{Kind: Cookie, Name: arg}, nil
	case "path":
		if !hasArg {
			return Spec{Kind: Path}, nil
		}
		n, ok := parseSegment(arg)
		if !ok {
			return Spec{}, specErrorf(s, "path segment "+strconv.Quote(arg)+" is not a whole number from 1 to "+strconv.Itoa(maxPathSegment)+", as in path:1")
		}
		return Spec{Kind: PathSeg, N: n}, nil
	case "host":
		if hasArg {
			return Spec{}, specErrorf(s, "host takes no argument")
		}
		return Spec{Kind: Host}, nil
	case "":
		if s == "" {
			return Spec{}, specErrorf(s, "empty")
		}
		return Spec{}, specErrorf(s, "missing source before \":\"")
	}
	return Spec{}, specErrorf(s, "unknown source "+strconv.Quote(src))
}

// maxPathSegment bounds path:N; no real URL has more segments, and the bound keeps N printable
// and re-parseable.
const maxPathSegment = 1 << 16

// parseSegment parses N of path:N: decimal digits only (no sign, no spaces), 1..maxPathSegment.
func parseSegment(s string) (int, bool) {
	if s == "" || len(s) > 6 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 || n > maxPathSegment {
		return 0, false
	}
	return n, true
}

// invalidTokenByte returns the index of the first byte of s that may not appear in an HTTP
// token (RFC 9110 section 5.6.2), the syntax of header and cookie names, or -1.
func invalidTokenByte(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return i
		}
	}
	return -1
}

// specError is a Parse error: its text alone, wrapping ErrBadSpec.
type specError struct{ msg string }

func (e *specError) Error() string { return e.msg }
func (e *specError) Unwrap() error { return ErrBadSpec }

func specErrorf(spec, what string) error {
	return &specError{msg: "--key " + strconv.Quote(spec) + ": " + what + "; " + validKeyForms}
}

// String returns the spec in the form Parse accepts; Parse(k.String()) == k for
// every spec Parse returns.
func (k Spec) String() string {
	switch k.Kind {
	case Header, Query, Cookie:
		return k.Kind.String() + ":" + k.Name
	case PathSeg:
		return "path:" + strconv.Itoa(k.N)
	case Path, Host:
		return k.Kind.String()
	}
	return "invalid Spec"
}

// Extract returns r's routing key, or false when the key is missing or empty (such a request is
// served by the router that accepted it). It does not allocate for header, a clean path
// (path, path:N), a lower-case host, or an unescaped query parameter or cookie.
func (k Spec) Extract(r *http.Request) (string, bool) {
	var v string
	switch k.Kind {
	case Header:
		if vs := r.Header[k.Name]; len(vs) > 0 {
			v = vs[0]
		}
	case Query:
		v = queryValue(r.URL.RawQuery, k.Name)
	case Cookie:
		v = cookieValue(r.Header["Cookie"], k.Name)
	case PathSeg:
		v = pathSegment(cleanPath(r.URL.Path), k.N)
	case Path:
		v = cleanPath(r.URL.Path)
	case Host:
		v = hostKey(r.Host)
	}
	return v, v != ""
}

// queryValue returns the first value of parameter name in the raw query q, decoded as
// url.ParseQuery does: pairs separated by "&", "+" meaning space, pairs that hold ";" or a bad
// %-escape skipped. It allocates only to decode an escaped name or value.
func queryValue(q, name string) string {
	for q != "" {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		if pair == "" || strings.IndexByte(pair, ';') >= 0 {
			continue
		}
		key, value, _ := strings.Cut(pair, "=")
		if !queryEqual(key, name) {
			continue
		}
		if needsUnescape(value) {
			var err error
			if value, err = url.QueryUnescape(value); err != nil {
				continue
			}
		}
		return value
	}
	return ""
}

// queryEqual reports whether the raw, possibly escaped query key decodes to name.
func queryEqual(raw, name string) bool {
	if raw == name {
		return !needsUnescape(raw)
	}
	if !needsUnescape(raw) {
		return false
	}
	key, err := url.QueryUnescape(raw)
	return err == nil && key == name
}

// needsUnescape reports whether a raw query key or value holds "%" or "+".
func needsUnescape(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '%' || s[i] == '+' {
			return true
		}
	}
	return false
}

// cookieValue returns the value of the first cookie called name in the Cookie header lines,
// without surrounding double quotes, as http.Request.Cookie would; it does not allocate.
// Unlike net/http it does not drop a cookie whose value holds bytes RFC 6265 disallows.
func cookieValue(lines []string, name string) string {
	for _, line := range lines {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = textproto.TrimString(part)
			key, value, ok := strings.Cut(part, "=")
			if !ok || key != name {
				continue
			}
			if len(value) > 1 && value[0] == '"' && value[len(value)-1] == '"' {
				value = value[1 : len(value)-1]
			}
			return value
		}
	}
	return ""
}

// cleanPath is p as web frameworks serve it, for path keys: dot segments removed (RFC 3986
// §5.2.4: "." dropped, ".." drops the segment before it, never above the root) and empty
// segments ("//") merged, a trailing "/" kept. Go's ServeMux, Django, Rails and Express route
// "/rooms//kitchen", "/x/../rooms/kitchen" and "/rooms/./kitchen" as "/rooms/kitchen", so
// one room must be one key. A path that is already clean is returned as it is, without
// allocating; one that does not begin with "/" (an OPTIONS *) too.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' || !strings.Contains(p, "//") && !strings.Contains(p, "/.") {
		return p
	}
	c := path.Clean(p)
	// The RFC keeps the "/" that ends a path in "/", "/." or "/..": "/a/b/.." is "/a/".
	last := p[strings.LastIndexByte(p, '/')+1:]
	if (last == "" || last == "." || last == "..") && c != "/" {
		c += "/"
	}
	return c
}

// pathSegment returns the n-th (1-based) "/"-separated segment of p after its leading "/", or ""
// when p has fewer segments. p is clean (cleanPath): no segment but a trailing one is empty.
func pathSegment(p string, n int) string {
	p = strings.TrimPrefix(p, "/")
	for i := 1; i < n; i++ {
		j := strings.IndexByte(p, '/')
		if j < 0 {
			return ""
		}
		p = p[j+1:]
	}
	if j := strings.IndexByte(p, '/'); j >= 0 {
		p = p[:j]
	}
	return p
}

// hostKey returns host without its port, the brackets of an IPv6 literal and the trailing dot
// of a fully qualified name, with ASCII letters lower-cased (allocating only when it holds
// upper-case ones): "Example.COM.:8080" is "example.com", as DNS names compare. Host names on
// the wire are ASCII (IDNA); other bytes are kept as they are.
func hostKey(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && validPort(host[i+1:]) {
		// A colon inside an unbracketed IPv6 literal is not a port separator.
		if host[0] == '[' || strings.IndexByte(host[:i], ':') < 0 {
			host = host[:i]
		}
	}
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return asciiLower(host, i)
		}
	}
	return host
}

// asciiLower returns s with ASCII upper-case letters lower-cased, given that s[:from] has none.
func asciiLower(s string, from int) string {
	b := []byte(s)
	for i := from; i < len(b); i++ {
		if c := b[i]; 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// validPort reports whether p is all digits (an empty port, as in "host:", counts).
func validPort(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}
