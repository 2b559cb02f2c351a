package process

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// What a request carries on about its client: X-Forwarded-For, X-Forwarded-Host,
// X-Forwarded-Proto and Forwarded, decided once here for every leg that passes a request on
// (ReverseProxy's Rewrite, the app fast path, the peer leg, the embedded handler):
//
//   - from a client olio does not trust, the client's own fields are dropped (anyone can
//     write them) and olio sets X-Forwarded-For to the client's address, X-Forwarded-Host to
//     the Host and X-Forwarded-Proto to the scheme it was reached by, as ReverseProxy's
//     SetXForwarded does;
//   - from a front listed in --forwarded-allow-ips (gunicorn's and uvicorn's name), the
//     front's fields pass: X-Forwarded-For is appended to (front's list, then the front's
//     own address), X-Forwarded-Host, X-Forwarded-Proto and Forwarded pass as they came
//     (olio's own value where the front set none);
//   - from a peer router (the request was forwarded in), the fields are as the router that
//     accepted it decided, and pass as they came.

// Forwarded header names.
const (
	headerForwarded = "Forwarded"
	headerXFF       = "X-Forwarded-For"
	headerXFHost    = "X-Forwarded-Host"
	headerXFProto   = "X-Forwarded-Proto"
)

// forwardedNames are the fields forwardedFields decides; every leg drops the client's own.
var forwardedNames = [...]string{headerForwarded, headerXFF, headerXFHost, headerXFProto}

// isForwardedName reports whether k (canonical) is one of forwardedNames.
func isForwardedName(k string) bool {
	switch k {
	case headerForwarded, headerXFF, headerXFHost, headerXFProto:
		return true
	}
	return false
}

// ForwardedAllowIPs is the set of fronts whose forwarded fields olio believes
// (--forwarded-allow-ips). Its zero value trusts nobody.
type ForwardedAllowIPs struct{ prefixes []netip.Prefix }

// ParseForwardedAllowIPs parses --forwarded-allow-ips: a comma-separated list of CIDR
// prefixes ("10.0.0.0/8") or single addresses ("127.0.0.1", "::1"); "" trusts nobody.
// Errors name the flag and the entry.
func ParseForwardedAllowIPs(s string) (ForwardedAllowIPs, error) {
	var t ForwardedAllowIPs
	if strings.TrimSpace(s) == "" {
		return t, nil
	}
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		var p netip.Prefix
		var err error
		if strings.Contains(entry, "/") {
			p, err = netip.ParsePrefix(entry)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(entry); err == nil && a.Zone() == "" {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil || !p.IsValid() {
			return ForwardedAllowIPs{}, fmt.Errorf("--forwarded-allow-ips %q: %q is not an address or a CIDR prefix; give the fronts' addresses as a comma-separated list, e.g. 127.0.0.1,10.0.0.0/8,fd00::/8", s, entry)
		}
		t.prefixes = append(t.prefixes, p.Masked())
	}
	return t, nil
}

// trusts reports whether remoteAddr (a request's RemoteAddr, host:port) is a trusted front.
func (t ForwardedAllowIPs) trusts(remoteAddr string) bool {
	if len(t.prefixes) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	for _, p := range t.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardedFields is what a request carries on about its client, one line per field; ""
// leaves a field out.
type forwardedFields struct {
	For, Host, Proto, Forwarded string
}

// forwardedOf decides req's forwarded fields: req is a public request whose connection's
// peer is trusted or not (connInfo.frontTrusted, set by ServeHTTP), or a request a peer
// router forwarded in (fromPeer).
func forwardedOf(req *http.Request) forwardedFields {
	h := req.Header
	if req.Context().Value(fromPeer) != nil {
		return forwardedFields{
			For:       joinLines(h[headerXFF]),
			Host:      joinLines(h[headerXFHost]),
			Proto:     joinLines(h[headerXFProto]),
			Forwarded: joinLines(h[headerForwarded]),
		}
	}
	f := forwardedFields{Host: req.Host, Proto: "http"}
	if req.TLS != nil {
		f.Proto = "https"
	}
	client, _, err := net.SplitHostPort(req.RemoteAddr)
	if err == nil {
		f.For = client
	}
	info, _ := req.Context().Value(connInfoKey{}).(*connInfo)
	if info == nil || !info.frontTrusted.Load() {
		return f
	}
	if prior := h[headerXFF]; len(prior) > 0 {
		if f.For != "" {
			f.For = strings.Join(prior, ", ") + ", " + f.For
		} else {
			f.For = joinLines(prior)
		}
	}
	if v := h[headerXFHost]; len(v) > 0 {
		f.Host = joinLines(v)
	}
	if v := h[headerXFProto]; len(v) > 0 {
		f.Proto = joinLines(v)
	}
	f.Forwarded = joinLines(h[headerForwarded])
	return f
}

// joinLines makes one field line of a field's lines (RFC 9110 §5.3); it allocates only for
// more than one.
func joinLines(v []string) string {
	switch len(v) {
	case 0:
		return ""
	case 1:
		return v[0]
	}
	return strings.Join(v, ", ")
}

// each calls fn with each field to send, in a fixed order.
func (f *forwardedFields) each(fn func(name, value string)) {
	if f.Forwarded != "" {
		fn(headerForwarded, f.Forwarded)
	}
	if f.For != "" {
		fn(headerXFF, f.For)
	}
	if f.Host != "" {
		fn(headerXFHost, f.Host)
	}
	if f.Proto != "" {
		fn(headerXFProto, f.Proto)
	}
}

// count is how many fields each gives.
func (f *forwardedFields) count() int {
	n := 0
	f.each(func(string, string) { n++ })
	return n
}

// setForwarded replaces h's forwarded fields with f's.
func setForwarded(h http.Header, f forwardedFields) {
	for _, k := range forwardedNames {
		delete(h, k)
	}
	f.each(func(k, v string) { h[k] = []string{v} })
}

// Header fields that olio sets or checks have look-alikes: WSGI, CGI and the stacks built on
// them (PHP, Rack, many Python frameworks) turn "-" and "_" alike into "_", so a client's
// "X_Olio_Secret" or "X_Forwarded_For" would reach such an app as olio's own X-Olio-Secret
// or X-Forwarded-For, past every check olio makes on those. The public side drops them, as
// nginx drops every name with "_" by default.

// dropLookalikes removes from h the fields whose names, with "_" read as "-", are one that
// olio sets or checks (X-Olio-*, the forwarded fields, the key's header) but are spelled
// with "_".
func dropLookalikes(h http.Header, keyHeader string) {
	for k := range h {
		if strings.IndexByte(k, '_') < 0 {
			continue
		}
		n := http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-"))
		if strings.HasPrefix(n, "X-Olio-") || isForwardedName(n) ||
			keyHeader != "" && n == http.CanonicalHeaderKey(strings.ReplaceAll(keyHeader, "_", "-")) && k != keyHeader {
			delete(h, k)
		}
	}
}
