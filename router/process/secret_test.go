package process

import (
	"crypto/subtle"
	"net/http"
	"testing"
)

func TestSecretOK(t *testing.T) {
	secret := []byte("s3cr3t")
	for _, tc := range []struct {
		got  []string
		want bool
	}{
		{[]string{"s3cr3t"}, true},
		{[]string{"s3cr3"}, false},
		{[]string{"s3cr3tt"}, false},
		{[]string{""}, false},
		{nil, false},
		{[]string{"s3cr3t", "s3cr3t"}, false}, // two values: refuse rather than guess
	} {
		if g := secretOK(secret, tc.got); g != tc.want {
			t.Errorf("secretOK(%q) = %v, want %v", tc.got, g, tc.want)
		}
	}
	if secretOK(nil, []string{""}) {
		t.Error("an empty secret must never match")
	}
}

// TestSecretLengthHidden: whatever the length of the guess, what is compared in constant
// time has the same length, so the comparison's time does not say the secret's length.
func TestSecretLengthHidden(t *testing.T) {
	defer func(c func(x, y []byte) int) { compare = c }(compare)
	var lens [][2]int
	compare = func(x, y []byte) int {
		lens = append(lens, [2]int{len(x), len(y)})
		return subtle.ConstantTimeCompare(x, y)
	}
	secret := []byte("s3cr3t")
	for _, guess := range []string{"", "s", "s3cr3t", "a much longer guess than the secret"} {
		secretOK(secret, []string{guess})
	}
	if len(lens) != 4 {
		t.Fatalf("%d comparisons for 4 guesses", len(lens))
	}
	for i, l := range lens {
		if l != lens[0] || l[0] != l[1] {
			t.Errorf("comparison %d: lengths %v, first %v: the time depends on the guess's length", i, l, lens[0])
		}
	}
}

func TestParseIndex(t *testing.T) {
	for _, tc := range []struct {
		in      string
		workers int
		want    int
		ok      bool
	}{
		{"0", 4, 0, true},
		{"3", 4, 3, true},
		{"4", 4, 0, false},
		{"-1", 4, 0, false},
		{"+1", 4, 0, false},
		{"01", 4, 0, false},
		{" 1", 4, 0, false},
		{"1x", 4, 0, false},
		{"", 4, 0, false},
		{"9999999999999999999999", 4, 0, false},
		{"0", 0, 0, false},
	} {
		g, ok := parseIndex(tc.in, tc.workers)
		if g != tc.want || ok != tc.ok {
			t.Errorf("parseIndex(%q, %d) = %d, %v; want %d, %v", tc.in, tc.workers, g, ok, tc.want, tc.ok)
		}
	}
}

func TestStripOlio(t *testing.T) {
	h := http.Header{}
	h.Set(HeaderIndex, "1")
	h.Set(HeaderSecret, "x")
	h.Set("X-Olio-Key", "alice")
	stripOlio(h)
	if len(h) != 1 || h.Get("X-Olio-Key") != "alice" {
		t.Errorf("after strip: %v", h)
	}
}
