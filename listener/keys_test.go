package listener

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router/keys"
)

// keysOwnedBy returns n keys that jump hash gives to worker i of workers.
func keysOwnedBy(i, workers, n int) []string {
	var ks []string
	for j := 0; len(ks) < n; j++ {
		k := fmt.Sprintf("key-%d", j)
		if keys.Owner(k, workers) == i {
			ks = append(ks, k)
		}
	}
	return ks
}

func count(key string, n uint64) descend.KeyCount {
	return descend.KeyCount{Key: key, Hash: xxhash.Sum64String(key), Count: n}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestMergeKeys(t *testing.T) {
	a, b := keysOwnedBy(0, 2, 2), keysOwnedBy(1, 2, 1)
	ans := []*descend.Keys{
		{Index: 0, Mode: descend.KeyStatsOn, Window: 10 * time.Second, Requests: 100, MaxError: 2,
			Keys: []descend.KeyCount{count(a[0], 60), count(a[1], 40)}},
		{Index: 1, Mode: descend.KeyStatsOn, Window: 20 * time.Second, Requests: 300,
			Keys: []descend.KeyCount{count(b[0], 300)}},
		nil, // a router that did not answer
	}
	rep := mergeKeys(descend.KeyStatsOn, 2, ans, []error{nil, nil, errors.New("worker 2: no router")})
	if len(rep.Keys) != 3 {
		t.Fatalf("%d keys, want 3: %+v", len(rep.Keys), rep.Keys)
	}
	want := []HotKey{
		{Key: b[0], Owner: 1, RequestsPerSecond: 15, WorkerShare: 1, ClusterShare: 0.75},
		{Key: a[0], Owner: 0, RequestsPerSecond: 6, WorkerShare: 0.6, ClusterShare: 0.15},
		{Key: a[1], Owner: 0, RequestsPerSecond: 4, WorkerShare: 0.4, ClusterShare: 0.1},
	}
	for i, w := range want {
		g := rep.Keys[i]
		if g.Key != w.Key || g.Owner != w.Owner || !near(g.RequestsPerSecond, w.RequestsPerSecond) ||
			!near(g.WorkerShare, w.WorkerShare) || !near(g.ClusterShare, w.ClusterShare) {
			t.Errorf("key %d: %+v, want %+v", i, g, w)
		}
	}
	// 100 and 300 requests: the busiest has 300, the mean is 200.
	if !near(rep.Imbalance, 1.5) || !near(rep.RequestsPerSecond, 25) || rep.WindowSeconds != 20 || !near(rep.MaxErrorShare, 2.0/400) {
		t.Errorf("report %+v", rep)
	}
	w := rep.Workers
	if !near(w[0].HotKeyShare, 0.6) || !near(w[1].HotKeyShare, 1) || !near(w[0].MaxErrorShare, 0.02) || w[2].Error == "" || w[2].Member {
		t.Errorf("workers %+v", w)
	}
}

// A key seen by two workers (its owner changed in the window) is one key: its counts add
// up, and its worker share is of its owner now.
func TestMergeKeysMovedKey(t *testing.T) {
	k := keysOwnedBy(1, 2, 1)[0] // owned by 1 of 2; at 1 worker it was 0's
	ans := []*descend.Keys{
		{Index: 0, Mode: descend.KeyStatsOn, Window: time.Minute, Requests: 50, Keys: []descend.KeyCount{count(k, 50)}},
		{Index: 1, Mode: descend.KeyStatsOn, Window: time.Minute, Requests: 100, Keys: []descend.KeyCount{count(k, 25)}},
	}
	rep := mergeKeys(descend.KeyStatsOn, 2, ans, make([]error, 2))
	if len(rep.Keys) != 1 || rep.Keys[0].Owner != 1 || !near(rep.Keys[0].ClusterShare, 0.5) || !near(rep.Keys[0].WorkerShare, 0.25) {
		t.Errorf("keys %+v", rep.Keys)
	}
}

func TestPlanScale(t *testing.T) {
	// 3 workers, 300 keys with one request each plus a hot one with 300.
	var ks []descend.KeyCount
	ans := make([]*descend.Keys, 3)
	for i := range ans {
		ans[i] = &descend.Keys{Index: i, Mode: descend.KeyStatsOn, Window: time.Minute}
	}
	add := func(key string, n uint64) {
		kc := count(key, n)
		o := keys.Jump(kc.Hash, 3)
		ans[o].Keys = append(ans[o].Keys, kc)
		ans[o].Requests += n
		ks = append(ks, kc)
	}
	add("hot", 300)
	for i := range 300 {
		add(fmt.Sprint("k", i), 1)
	}
	rep := mergeKeys(descend.KeyStatsOn, 3, ans, make([]error, 3))
	for _, to := range []int{1, 2, 3, 4, 6} {
		p := planScale(rep, to)
		// Counted from the keys directly.
		moved, movedReq := 0, 0.0
		for _, kc := range ks {
			from, now := keys.Jump(kc.Hash, 3), keys.Jump(kc.Hash, to)
			if from != now {
				moved++
				movedReq += float64(kc.Count)
				if to > 3 && now < 3 {
					t.Errorf("growing to %d moves %s to old worker %d", to, kc.Key, now)
				}
			}
		}
		if p.From != 3 || p.To != to || p.TrackedKeys != 301 || p.MovedKeys != moved || !near(p.MovedTrackedShare, movedReq/600) ||
			!near(p.MovedShare, movedReq/600) || !near(p.TrackedShare, 1) {
			t.Errorf("to %d: plan %+v, want %d keys moved, share %.4f", to, p, moved, movedReq/600)
		}
		if to == 3 && (p.MovedKeys != 0 || p.ExpectedImbalance != p.Imbalance) {
			t.Errorf("to the same count: %+v", p)
		}
		if to == 1 && !near(p.ExpectedImbalance, 1) {
			t.Errorf("to 1 worker: expected imbalance %.3f, want 1", p.ExpectedImbalance)
		}
	}
}

// Requests of keys no worker tracks move at jump hash's rate.
func TestPlanScaleUntracked(t *testing.T) {
	ans := []*descend.Keys{
		{Index: 0, Mode: descend.KeyStatsOn, Window: time.Minute, Requests: 1000},
		{Index: 1, Mode: descend.KeyStatsOn, Window: time.Minute, Requests: 1000},
	}
	rep := mergeKeys(descend.KeyStatsOn, 2, ans, make([]error, 2))
	for to, want := range map[int]float64{4: 0.5, 1: 0.5, 2: 0, 3: 1.0 / 3} {
		if p := planScale(rep, to); !near(p.MovedShare, want) || p.TrackedKeys != 0 || !near(p.ExpectedImbalance, 1) {
			t.Errorf("2 → %d: %+v, want moved share %.3f", to, p, want)
		}
	}
	if p := planScale(KeysReport{Members: 4}, 5); !near(p.MovedShare, 0.2) {
		t.Errorf("no requests, 4 → 5: moved share %.3f, want 0.2", p.MovedShare)
	}
}
