package process

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strconv"
)

// The headers of direct addressing. Neither ever reaches an app, a log line or a response.
const (
	HeaderIndex  = "X-Olio-Index"
	HeaderSecret = "X-Olio-Secret"
)

// digestKey keys the digests secretOK compares: random, per process, never sent anywhere.
var digestKey = rand.Text()

// compare compares two digests in constant time (a variable so that a test can see what
// is compared).
var compare = subtle.ConstantTimeCompare

// secretOK reports whether got is the secret, in time independent of where they differ and
// of their lengths: it compares HMAC-SHA256 digests of both, which are always 32 bytes
// (subtle.ConstantTimeCompare alone returns at once when the lengths differ, which tells
// a caller the secret's length).
func secretOK(secret []byte, got []string) bool {
	if len(got) != 1 || len(secret) == 0 {
		return false
	}
	return compare(digest(secret), digest([]byte(got[0]))) == 1
}

func digest(b []byte) []byte {
	m := hmac.New(sha256.New, []byte(digestKey))
	m.Write(b)
	return m.Sum(nil)
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
