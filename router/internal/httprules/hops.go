package httprules

import (
	"net/http"
	"strings"
)

// HopFilter drops the fields that do not cross a proxy (RFC 9110 §7.6.1): the hop-by-hop
// ones, those a Connection field names, and, on a request, the client's X-Forwarded-*,
// Forwarded and Expect (the accepting router sets the first, answers the last) and olio's
// own; as ReverseProxy drops them. A nil *HopFilter drops nothing.
type HopFilter struct {
	conn    []string // the names the Connection field lists, canonical
	request bool
}

// The filters of headers without a Connection field.
var (
	RequestHops  = &HopFilter{request: true}
	ResponseHops = &HopFilter{}
)

// Hops is the filter for a request's (request) or an answer's header whose Connection
// field is conn.
func Hops(conn []string, request bool) *HopFilter {
	shared := ResponseHops
	if request {
		shared = RequestHops
	}
	var f *HopFilter
	for _, v := range conn {
		for k := range strings.SplitSeq(v, ",") {
			if k = strings.TrimSpace(k); k == "" {
				continue
			}
			k = http.CanonicalHeaderKey(k)
			if shared.Drop(k) {
				continue // "keep-alive", "close", "upgrade", ...: dropped anyway
			}
			if f == nil {
				f = &HopFilter{request: request}
			}
			f.conn = append(f.conn, k)
		}
	}
	if f == nil { // the common case allocates nothing
		return shared
	}
	return f
}

// Drop reports whether the field named k (canonical) does not cross.
func (f *HopFilter) Drop(k string) bool {
	if f == nil {
		return false
	}
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	case HeaderForwarded, HeaderXFF, HeaderXFHost, HeaderXFProto, "Expect",
		headerTiming, headerIndex, headerSecret:
		if f.request {
			return true
		}
	}
	for _, c := range f.conn {
		if c == k {
			return true
		}
	}
	return false
}

// olio's own request fields, which one router sets for the next and a client's request never
// carries on (package process names them: HeaderIndex, HeaderSecret, headerTiming).
const (
	headerIndex  = "X-Olio-Index"
	headerSecret = "X-Olio-Secret"
	headerTiming = "X-Olio-Timing"
)
