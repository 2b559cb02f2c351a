package listener

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router/keys"
)

// KeysReport is the cluster's hottest keys over the recent window (`olio keys`): every
// router's summary of the keys it served as their owner, merged at the time of the call.
// Rates are requests per second with a key, over each worker's window.
type KeysReport struct {
	Mode              string  `json:"mode"`                // --key-stats: on, hashed or off (then nothing else)
	WindowSeconds     float64 `json:"window_seconds"`      // how far back the counts reach
	Members           int     `json:"members"`             // workers that own keys
	RequestsPerSecond float64 `json:"requests_per_second"` // the cluster's requests with a key
	// Imbalance is the busiest member's requests in the window divided by the members'
	// mean: 1 is even, N means one worker takes everything; 0 when there were none.
	Imbalance float64 `json:"imbalance"`
	// MaxErrorShare bounds how far any key's cluster_share may be from the truth. Shares
	// and the imbalance are of the requests counted in the workers' windows.
	MaxErrorShare float64      `json:"max_error_share"`
	Keys          []HotKey     `json:"keys,omitempty"`    // hottest first
	Workers       []WorkerLoad `json:"workers,omitempty"` // by index
	total         float64      // requests in the windows
}

// HotKey is one of the cluster's hottest keys.
type HotKey struct {
	Key               string  `json:"key"`   // the key, or its digest with --key-stats hashed
	Owner             int     `json:"owner"` // the worker that owns it: jump(xxhash64(key), members)
	RequestsPerSecond float64 `json:"requests_per_second"`
	WorkerShare       float64 `json:"worker_share"`  // share of its owner's requests
	ClusterShare      float64 `json:"cluster_share"` // share of the cluster's requests
	hash              uint64
	count             float64 // requests in the windows
}

// WorkerLoad is one worker's part in a KeysReport.
type WorkerLoad struct {
	Index             int     `json:"index"`
	Member            bool    `json:"member"` // owns keys (false while joining or leaving)
	RequestsPerSecond float64 `json:"requests_per_second"`
	HotKeyShare       float64 `json:"hot_key_share"` // share of its requests taken by its hottest key
	// MaxErrorShare bounds how far any key's worker_share may be from the truth: 0 while
	// the worker has seen fewer distinct keys than it tracks.
	MaxErrorShare float64 `json:"max_error_share"`
	Error         string  `json:"error,omitempty"` // why the worker's summary is missing
}

// ScalePlan says what `olio scale N` would move, computed from the keys tracked now
// without changing anything (`olio scale N --dry-run`).
type ScalePlan struct {
	Mode        string `json:"mode"` // --key-stats; off: only from, to and moved_share
	From        int    `json:"from"`
	To          int    `json:"to"`
	TrackedKeys int    `json:"tracked_keys"` // keys in the workers' summaries
	MovedKeys   int    `json:"moved_keys"`   // of those, the ones whose owner changes
	// TrackedShare is the share of the recent requests that carried a tracked key, and
	// MovedTrackedShare the share that carried one that would move.
	TrackedShare      float64 `json:"tracked_share"`
	MovedTrackedShare float64 `json:"moved_tracked_share"`
	// MovedShare estimates the share of the recent requests whose owner would change: the
	// tracked keys that move, plus the rest at jump hash's rate (|to-from| / max(to, from)).
	MovedShare        float64 `json:"moved_share"`
	Imbalance         float64 `json:"imbalance"`          // now
	ExpectedImbalance float64 `json:"expected_imbalance"` // at To workers, the rest spread evenly
}

// Keys merges every router's hot-key summary; top bounds the keys listed (0: every key
// some worker tracks).
func (m *Master) Keys(ctx context.Context, top int) KeysReport {
	rep := m.keys(ctx, 0)
	if top > 0 && len(rep.Keys) > top {
		rep.Keys = rep.Keys[:top]
	}
	return rep
}

// keys asks every router for its summary, at most perWorker keys each (0: all), bounded
// by StatsTimeout and ctx, and merges them.
func (m *Master) keys(ctx context.Context, perWorker int) KeysReport {
	mode := m.config().KeyStats
	v := m.snapshot()
	workers, members := v.workers, v.members
	if mode != descend.KeyStatsOn && mode != descend.KeyStatsHashed {
		return KeysReport{Mode: descend.KeyStatsOff, Members: members}
	}
	ans := make([]*descend.Keys, len(workers))
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, StatsTimeout)
			defer cancel()
			a, err := w.call(ctx, &descend.KeysRequest{ID: m.nextID(), Top: perWorker})
			if k, ok := a.(*descend.Keys); err == nil && ok {
				k.Index = w.index
				ans[i] = k
			} else if err == nil {
				err = fmt.Errorf("worker %d answered %s", w.index, a.Type())
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return mergeKeys(mode, members, ans, errs)
}

// mergeKeys merges the routers' summaries ans (nil where errs says why not) for a
// cluster of members workers. Shares and the imbalance are of the requests counted in the
// workers' windows, rates of each worker's count over its own window (shorter than a
// minute while the worker is young).
func mergeKeys(mode string, members int, ans []*descend.Keys, errs []error) KeysReport {
	rep := KeysReport{Mode: mode, Members: members, Workers: make([]WorkerLoad, len(ans))}
	byIndex := map[int]float64{}       // requests by worker index
	merged := map[uint64]*HotKey{}     // by hash
	ownerCount := map[uint64]float64{} // a key's count on the worker that owns it now
	var maxErr float64
	for i, k := range ans {
		wl := &rep.Workers[i]
		wl.Index, wl.Member = i, i < members
		if k == nil {
			if errs[i] != nil {
				wl.Error = errs[i].Error()
			}
			continue
		}
		wl.Index, wl.Member = k.Index, k.Index < members
		secs := k.Window.Seconds()
		if secs <= 0 || k.Mode == descend.KeyStatsOff {
			continue
		}
		rep.WindowSeconds = max(rep.WindowSeconds, secs)
		byIndex[k.Index] += float64(k.Requests)
		rep.total += float64(k.Requests)
		maxErr += float64(k.MaxError)
		wl.RequestsPerSecond = float64(k.Requests) / secs
		rep.RequestsPerSecond += wl.RequestsPerSecond
		if k.Requests > 0 {
			wl.MaxErrorShare = min(1, float64(k.MaxError)/float64(k.Requests))
			if len(k.Keys) > 0 {
				wl.HotKeyShare = min(1, float64(k.Keys[0].Count)/float64(k.Requests))
			}
		}
		for _, kc := range k.Keys {
			hk := merged[kc.Hash]
			if hk == nil {
				hk = &HotKey{Key: kc.Key, hash: kc.Hash, Owner: keys.Jump(kc.Hash, members)}
				merged[kc.Hash] = hk
			}
			hk.count += float64(kc.Count)
			hk.RequestsPerSecond += float64(kc.Count) / secs
			if k.Index == hk.Owner {
				ownerCount[kc.Hash] += float64(kc.Count)
			}
		}
	}
	loads := make([]float64, members)
	for i := range loads {
		loads[i] = byIndex[i]
	}
	rep.Imbalance = imbalance(loads, members)
	if rep.total > 0 {
		rep.MaxErrorShare = min(1, maxErr/rep.total)
	}
	for _, hk := range merged {
		if rep.total > 0 {
			hk.ClusterShare = min(1, hk.count/rep.total)
		}
		if c := byIndex[hk.Owner]; c > 0 {
			hk.WorkerShare = min(1, ownerCount[hk.hash]/c)
		}
		rep.Keys = append(rep.Keys, *hk)
	}
	slices.SortFunc(rep.Keys, func(a, b HotKey) int {
		return cmp.Or(cmp.Compare(b.count, a.count), cmp.Compare(a.hash, b.hash))
	})
	return rep
}

// imbalance is the largest of n workers' loads divided by their mean (loads lists the
// first ones; the rest have none); 0 when there is no load.
func imbalance(loads []float64, n int) float64 {
	var sum, most float64
	for _, l := range loads {
		sum += l
		most = max(most, l)
	}
	if sum <= 0 || n <= 0 {
		return 0
	}
	return most / (sum / float64(n))
}

// PlanScale says what scaling to n workers would move, from the keys the workers track
// now (see ScalePlan). It changes nothing.
func (m *Master) PlanScale(ctx context.Context, n int) (ScalePlan, error) {
	if n < 0 || n > MaxWorkers {
		return ScalePlan{}, fmt.Errorf("%w: cannot scale to %d workers: use 0 to %d", ErrConfig, n, MaxWorkers)
	}
	return planScale(m.keys(ctx, 0), n), nil
}

// planScale computes a ScalePlan from a report of every tracked key.
func planScale(rep KeysReport, n int) ScalePlan {
	from := rep.Members
	p := ScalePlan{Mode: rep.Mode, From: from, To: n, TrackedKeys: len(rep.Keys), Imbalance: rep.Imbalance}
	// jump hash moves this share of uniformly spread keys
	rest := 0.0
	switch {
	case n > from:
		rest = float64(n-from) / float64(n)
	case n < from:
		rest = float64(from-n) / float64(from)
	}
	total := rep.total
	if total <= 0 {
		p.MovedShare = rest
		return p
	}
	loads := make([]float64, n)
	var tracked, moved float64
	for _, k := range rep.Keys {
		tracked += k.count
		owner := keys.Jump(k.hash, n)
		if owner != k.Owner {
			p.MovedKeys++
			moved += k.count
		}
		if owner >= 0 {
			loads[owner] += k.count
		}
	}
	tracked = min(tracked, total)
	moved = min(moved, tracked)
	untracked := total - tracked
	for i := range loads {
		loads[i] += untracked / float64(n)
	}
	p.TrackedShare = tracked / total
	p.MovedTrackedShare = moved / total
	p.MovedShare = (moved + untracked*rest) / total
	p.ExpectedImbalance = imbalance(loads, n)
	return p
}
