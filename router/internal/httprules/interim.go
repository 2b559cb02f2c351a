package httprules

import (
	"errors"
	"net/http"
	"strings"
)

// MaxInterim bounds the interim answers (1xx but 101) a leg passes on before the final
// answer, as http.Transport's.
const MaxInterim = 5

// ErrTooManyInterim is an answer with more than MaxInterim interim answers before it.
var ErrTooManyInterim = errors.New("router: too many 1xx informational answers")

// PassInterim passes an interim answer (1xx) on to the client, as ReverseProxy does, but
// the header already in w's, meant for the final answer, stays for it.
func PassInterim(w http.ResponseWriter, code int, h http.Header) {
	wh := w.Header()
	var kept http.Header
	if len(wh) > 0 {
		kept = wh.Clone()
	}
	for k, vs := range h {
		wh[k] = append(wh[k], vs...)
	}
	w.WriteHeader(code)
	clear(wh)
	for k, vs := range kept {
		wh[k] = vs
	}
}

// HasToken reports whether a comma-separated header holds token, case-insensitively.
func HasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// UpgradeType is the protocol an upgrade asks for or switches to ("" for none).
func UpgradeType(h http.Header) string {
	if !HasToken(h["Connection"], "upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// Printable reports whether s is printable ASCII (an upgrade's protocol must be).
func Printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
