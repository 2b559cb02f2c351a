package httprules

import (
	"net/url"
	"strings"
)

// OutboundURI is the request URI every leg (peer, app) sends for u: ReverseProxy's, whose
// query drops what does not parse (a semicolon, a bad escape), so that the app gets the same
// request whichever way it came.
func OutboundURI(u *url.URL) string {
	if !cleanQuery(u.RawQuery) {
		c := *u
		c.RawQuery = reencodeQuery(u.RawQuery)
		return c.RequestURI()
	}
	return u.RequestURI()
}

// cleanQuery reports whether a query passes as it is (ReverseProxy re-encodes one with a
// semicolon, a bad escape or too many parameters, dropping what does not parse).
func cleanQuery(q string) bool {
	if strings.Count(q, "&") >= maxQueryParams {
		return false
	}
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case ';':
			return false
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

// maxQueryParams is net/url's default bound on the parameters of a query.
const maxQueryParams = 10000

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// reencodeQuery keeps what parses of q.
func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}
