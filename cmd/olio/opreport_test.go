package main

import (
	"strings"
	"testing"

	"github.com/olio-dev/olio/listener"
)

// The summary names a hold only when requests were held: "0 requests held, longest hold
// 7ms" contradicts itself (the hold is a router's last, perhaps from an earlier operation).
func TestSummaryText(t *testing.T) {
	for _, tc := range []struct {
		sum  *listener.OpSummary
		want string
	}{
		{nil, ""},
		{&listener.OpSummary{Took: 0.08, Held: 0.007042}, " (took 0.08 s)"},
		{&listener.OpSummary{Took: 3.1, Held: 0.002035, HeldRequests: 12}, " (took 3.10 s, 12 requests held, longest 2.035ms)"},
		{&listener.OpSummary{Took: 1, HeldRequests: 1}, " (took 1.00 s, 1 request held)"},
	} {
		if g := summaryText(tc.sum); g != tc.want {
			t.Errorf("summaryText(%+v) = %q, want %q", tc.sum, g, tc.want)
		}
	}
}

// At low traffic every key fits in the summaries: the footer says the counts are exact
// instead of "within 0.0%".
func TestKeysFooterAtLowTraffic(t *testing.T) {
	var b strings.Builder
	if err := writeKeys(&b, &listener.KeysReport{Mode: "on", Members: 1}); err != nil {
		t.Fatal(err)
	}
	if g := b.String(); strings.Contains(g, "within 0.0%") || !strings.Contains(g, "counts are exact") {
		t.Errorf("footer at low traffic:\n%s", g)
	}
}
