package process

import (
	"net/http"

	"github.com/olio-dev/olio/router/internal/httprules"
)

// What a request carries on about its client is decided by package httprules, for every leg
// that passes a request on; here, from what this router knows of the request: whether a
// peer router forwarded it in (fromPeer) or its connection's peer is a trusted front
// (connInfo.frontTrusted, set by ServeHTTP).

// ForwardedAllowIPs is the set of fronts whose forwarded fields olio believes
// (--forwarded-allow-ips). Its zero value trusts nobody.
type ForwardedAllowIPs = httprules.ForwardedAllowIPs

// ParseForwardedAllowIPs parses --forwarded-allow-ips: a comma-separated list of CIDR
// prefixes ("10.0.0.0/8") or single addresses ("127.0.0.1", "::1"); "" trusts nobody.
// Errors name the flag and the entry.
func ParseForwardedAllowIPs(s string) (ForwardedAllowIPs, error) {
	return httprules.ParseForwardedAllowIPs(s)
}

// forwardedOf decides req's forwarded fields: req is a public request whose connection's
// peer is trusted or not, or a request a peer router forwarded in.
func forwardedOf(req *http.Request) httprules.Forwarded {
	if req.Context().Value(fromPeer) != nil {
		return httprules.ForwardedOf(req, true, false)
	}
	info, _ := req.Context().Value(connInfoKey{}).(*connInfo)
	return httprules.ForwardedOf(req, false, info != nil && info.frontTrusted.Load())
}
