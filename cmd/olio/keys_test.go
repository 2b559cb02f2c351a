package main

import (
	"strings"
	"testing"

	"github.com/olio-dev/olio/listener"
)

func TestWriteKeys(t *testing.T) {
	rep := &listener.KeysReport{
		Mode: "on", WindowSeconds: 59.5, Members: 2, RequestsPerSecond: 250, Imbalance: 1.6, MaxErrorShare: 0.004,
		Keys: []listener.HotKey{
			{Key: "tenant-42", Owner: 1, RequestsPerSecond: 150, WorkerShare: 0.75, ClusterShare: 0.6},
			{Key: "a\x1b[2Jb", Owner: 0, RequestsPerSecond: 10.25, WorkerShare: 0.2, ClusterShare: 0.041},
		},
		Workers: []listener.WorkerLoad{
			{Index: 0, Member: true, RequestsPerSecond: 50, HotKeyShare: 0.2},
			{Index: 1, Member: true, RequestsPerSecond: 200, HotKeyShare: 0.75},
			{Index: 2, Error: "worker 2: no router"},
		},
	}
	var b strings.Builder
	if err := writeKeys(&b, rep); err != nil {
		t.Fatal(err)
	}
	// A key is printed quoted: it comes from clients, and must not drive the terminal.
	want := `olio keys: last 59s, 2 workers, 250.0 requests/s with a key, imbalance 1.60 (busiest worker ÷ mean)

KEY          OWNER  REQ/S  OF WORKER  OF CLUSTER
"tenant-42"  1      150.0  75.0%      60.0%
"a\x1b[2Jb"  0      10.2   20.0%      4.1%

WORKER  REQ/S  HOTTEST KEY
0       50.0   20.0%
1       200.0  75.0%
2*!     0.0    0.0%

shares are within 0.4% of the cluster's requests (Space-Saving, 128 keys per worker and 10 s step)
! worker 2 sent no counts (worker 2: no router)
`
	if g := b.String(); g != want {
		t.Errorf("got:\n%s\nwant:\n%s", g, want)
	}
}
