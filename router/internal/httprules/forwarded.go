package httprules

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
	HeaderForwarded = "Forwarded"
	HeaderXFF       = "X-Forwarded-For"
	HeaderXFHost    = "X-Forwarded-Host"
	HeaderXFProto   = "X-Forwarded-Proto"
)

// ForwardedNames are the fields ForwardedOf decides; every leg drops the client's own.
var ForwardedNames = [...]string{HeaderForwarded, HeaderXFF, HeaderXFHost, HeaderXFProto}

// IsForwardedName reports whether k (canonical) is one of ForwardedNames.
func IsForwardedName(k string) bool {
	switch k {
	case HeaderForwarded, HeaderXFF, HeaderXFHost, HeaderXFProto:
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

// Trusts reports whether remoteAddr (a request's RemoteAddr, host:port) is a trusted front.
func (t ForwardedAllowIPs) Trusts(remoteAddr string) bool {
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

// Forwarded is what a request carries on about its client, one line per field; "" leaves a
// field out.
type Forwarded struct {
	For, Host, Proto, Forwarded string
}

// ForwardedOf decides req's forwarded fields: req is a request a peer router forwarded in
// (fromPeer), or a public request whose connection's peer is a trusted front or not
// (trusted).
func ForwardedOf(req *http.Request, fromPeer, trusted bool) Forwarded {
	h := req.Header
	if fromPeer {
		return Forwarded{
			For:       joinLines(h[HeaderXFF]),
			Host:      joinLines(h[HeaderXFHost]),
			Proto:     joinLines(h[HeaderXFProto]),
			Forwarded: joinLines(h[HeaderForwarded]),
		}
	}
	f := Forwarded{Host: req.Host, Proto: "http"}
	if req.TLS != nil {
		f.Proto = "https"
	}
	client, _, err := net.SplitHostPort(req.RemoteAddr)
	if err == nil {
		f.For = client
	}
	if !trusted {
		return f
	}
	if prior := h[HeaderXFF]; len(prior) > 0 {
		if f.For != "" {
			f.For = strings.Join(prior, ", ") + ", " + f.For
		} else {
			f.For = joinLines(prior)
		}
	}
	if v := h[HeaderXFHost]; len(v) > 0 {
		f.Host = joinLines(v)
	}
	if v := h[HeaderXFProto]; len(v) > 0 {
		f.Proto = joinLines(v)
	}
	f.Forwarded = joinLines(h[HeaderForwarded])
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

// Each calls fn with each field to send, in a fixed order.
func (f *Forwarded) Each(fn func(name, value string)) {
	if f.Forwarded != "" {
		fn(HeaderForwarded, f.Forwarded)
	}
	if f.For != "" {
		fn(HeaderXFF, f.For)
	}
	if f.Host != "" {
		fn(HeaderXFHost, f.Host)
	}
	if f.Proto != "" {
		fn(HeaderXFProto, f.Proto)
	}
}

// Count is how many fields Each gives.
func (f *Forwarded) Count() int {
	n := 0
	f.Each(func(string, string) { n++ })
	return n
}

// SetForwarded replaces h's forwarded fields with f's.
func SetForwarded(h http.Header, f Forwarded) {
	for _, k := range ForwardedNames {
		delete(h, k)
	}
	f.Each(func(k, v string) { h[k] = []string{v} })
}

// Header fields that olio sets or checks have look-alikes: WSGI, CGI and the stacks built on
// them (PHP, Rack, many Python frameworks) turn "-" and "_" alike into "_", so a client's
// "X_Olio_Secret" or "X_Forwarded_For" would reach such an app as olio's own X-Olio-Secret
// or X-Forwarded-For, past every check olio makes on those. The public side drops them, as
// nginx drops every name with "_" by default.

// DropLookalikes removes from h the fields whose names, with "_" read as "-", are one that
// olio sets or checks (X-Olio-*, the forwarded fields, the key's header) but are spelled
// with "_".
func DropLookalikes(h http.Header, keyHeader string) {
	for k := range h {
		if strings.IndexByte(k, '_') < 0 {
			continue
		}
		n := http.CanonicalHeaderKey(strings.ReplaceAll(k, "_", "-"))
		if strings.HasPrefix(n, "X-Olio-") || IsForwardedName(n) ||
			keyHeader != "" && n == http.CanonicalHeaderKey(strings.ReplaceAll(keyHeader, "_", "-")) && k != keyHeader {
			delete(h, k)
		}
	}
}
