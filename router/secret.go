package router

import (
	"crypto/subtle"
	"net/http"
	"strconv"
)

// The headers of direct addressing. Neither ever reaches an app, a log line or a response.
const (
	HeaderIndex  = "X-Olio-Index"
	HeaderSecret = "X-Olio-Secret"
)

// secretOK reports whether got is the secret, in time independent of where they differ.
func secretOK(secret []byte, got []string) bool {
	if len(got) != 1 || len(secret) == 0 {
		return false
	}
	return subtle.ConstantTimeCompare(secret, []byte(got[0])) == 1
}

// parseIndex parses X-Olio-Index against a worker count: a plain decimal in 0..workers-1.
func parseIndex(s string, workers int) (int, bool) {
	if s == "" || len(s) > 6 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	i, err := strconv.Atoi(s)
	if err != nil || i >= workers {
		return 0, false
	}
	return i, true
}

// stripOlio removes the direct-addressing headers from h.
func stripOlio(h http.Header) {
	delete(h, HeaderIndex)
	delete(h, HeaderSecret)
}
