package process

import (
	"strconv"
	"testing"
)

// FuzzParseIndex: parseIndex never panics, and accepts exactly the canonical decimal
// spellings (no sign, no leading zero, no spaces, at most 6 digits) of 0..workers-1.
func FuzzParseIndex(f *testing.F) {
	for _, c := range []struct {
		s       string
		workers int
	}{
		{"0", 1}, {"1", 2}, {"3", 4}, {"4", 4}, {"1023", 1024}, {"", 4}, {"-1", 4}, {"+1", 4},
		{"01", 4}, {"00", 4}, {" 1", 4}, {"1 ", 4}, {"1\x00", 4}, {"0x1", 4}, {"1e2", 200},
		{"999999", 1 << 20}, {"1000000", 1 << 30}, {"9223372036854775808", 4}, {"٣", 4},
		{"0", 0}, {"0", -1}, {"1,2", 4},
	} {
		f.Add(c.s, c.workers)
	}
	f.Fuzz(func(t *testing.T, s string, workers int) {
		i, ok := parseIndex(s, workers)
		n, err := strconv.Atoi(s)
		want := err == nil && len(s) <= 6 && strconv.Itoa(n) == s && n >= 0 && n < workers
		if ok != want {
			t.Fatalf("parseIndex(%q, %d) = %d, %v; want ok=%v", s, workers, i, ok, want)
		}
		if ok && i != n {
			t.Fatalf("parseIndex(%q, %d) = %d, want %d", s, workers, i, n)
		}
		if !ok && i != 0 {
			t.Fatalf("parseIndex(%q, %d) = %d, false: a rejected index must come back as 0", s, workers, i)
		}
	})
}
