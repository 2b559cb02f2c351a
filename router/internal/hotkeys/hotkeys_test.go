package hotkeys

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/olio-dev/olio/descend"
)

// recordKey records one request for key, as the request path does.
func recordKey(t *Counter, mode, key string) { t.Record(mode, xxhash.Sum64String(key), key) }

// at is a fixed instant a little into a step, so that tests stay within one step.
var at = time.Unix(0, 1_000_000*int64(hotStep)+int64(time.Second))

func TestSpaceSavingBound(t *testing.T) {
	const capacity, n = 16, 20000
	s := newSpaceSaving(capacity)
	s.reset(1)
	truth := map[uint64]uint64{}
	rng := rand.New(rand.NewPCG(1, 2))
	for range n {
		k := uint64(rng.IntN(1000)) // a long tail of 1000 keys...
		if rng.IntN(10) < 3 {
			k = 7 // ...and one key taking 30%
		}
		truth[k]++
		s.add(k, 1, []byte(fmt.Sprint(k)))
	}
	if s.total != n {
		t.Fatalf("total %d, want %d", s.total, n)
	}
	es := s.entries(nil)
	hottest(es)
	if es[0].hash != 7 || es[0].key != "7" {
		t.Fatalf("hottest is %d (%q), want 7", es[0].hash, es[0].key)
	}
	bound := s.maxError()
	if bound == 0 || bound > n/capacity {
		t.Fatalf("maxError %d, want in (0, %d]", bound, n/capacity)
	}
	for _, e := range es {
		if e.count < truth[e.hash] || e.count-truth[e.hash] > bound {
			t.Errorf("key %d: count %d, true %d, bound %d", e.hash, e.count, truth[e.hash], bound)
		}
	}
}

func TestHotKeysSnapshot(t *testing.T) {
	h := New(at.Add(-time.Minute))
	long := strings.Repeat("x", 100)
	for range 50 {
		recordKey(h, descend.KeyStatsOn, "alice")
	}
	for range 5 {
		recordKey(h, descend.KeyStatsOn, "bob")
	}
	recordKey(h, descend.KeyStatsOn, long)
	cut := strings.Repeat("x", hotKeyBytes-1) + "é" // the cut falls inside é
	recordKey(h, descend.KeyStatsOn, cut)
	k := h.Snapshot(at, 0, descend.KeyStatsOn, []byte("s"))
	if k.Mode != descend.KeyStatsOn || k.Requests != 57 || k.MaxError != 0 || len(k.Keys) != 4 {
		t.Fatalf("snapshot %+v", k)
	}
	if g, e := k.Keys[0], (descend.KeyCount{Key: "alice", Hash: xxhash.Sum64String("alice"), Count: 50}); g != e {
		t.Errorf("hottest %+v, want %+v", g, e)
	}
	if g, e := k.Keys[1].Key, "bob"; g != e {
		t.Errorf("second %q, want %q", g, e)
	}
	for _, kc := range k.Keys[2:] {
		want := long[:hotKeyBytes] + "…"
		if kc.Hash == xxhash.Sum64String(cut) {
			want = cut[:hotKeyBytes-1] + "…"
		}
		if kc.Key != want {
			t.Errorf("long key shown as %q, want %q", kc.Key, want)
		}
	}
	if k.Window <= 0 || k.Window > Window {
		t.Errorf("window %s", k.Window)
	}
	if k := h.Snapshot(at, 1, descend.KeyStatsOn, nil); len(k.Keys) != 1 || k.Requests != 57 {
		t.Errorf("top 1: %+v", k)
	}
}

func TestHotKeysHashed(t *testing.T) {
	h := New(at)
	for range 3 {
		recordKey(h, descend.KeyStatsHashed, "alice@example.com")
	}
	k := h.Snapshot(at.Add(time.Second), 0, descend.KeyStatsHashed, []byte("secret"))
	if len(k.Keys) != 1 || k.Keys[0].Count != 3 {
		t.Fatalf("snapshot %+v", k)
	}
	d := k.Keys[0].Key
	if d != KeyDigest([]byte("secret"), xxhash.Sum64String("alice@example.com")) || len(d) != 17 || strings.Contains(d, "alice") {
		t.Errorf("hashed key shown as %q", d)
	}
	if d == KeyDigest([]byte("other"), xxhash.Sum64String("alice@example.com")) {
		t.Errorf("the digest does not depend on the secret")
	}
	for _, s := range h.steps {
		for _, e := range s.heap.e {
			if e.key != "" {
				t.Errorf("hashed mode kept the key %q", e.key)
			}
		}
	}
}

func TestHotKeysOff(t *testing.T) {
	h := New(at)
	recordKey(h, "", "alice")
	recordKey(h, descend.KeyStatsOff, "alice")
	if h.tail.Load() != 0 {
		t.Fatalf("off recorded %d requests", h.tail.Load())
	}
	recordKey(h, descend.KeyStatsOn, "alice")
	// Turned off by a reload: what was counted goes.
	if k := h.Snapshot(at, 0, descend.KeyStatsOff, nil); k.Mode != descend.KeyStatsOff || k.Requests != 0 || len(k.Keys) != 0 {
		t.Fatalf("off: %+v", k)
	}
	if k := h.Snapshot(at, 0, descend.KeyStatsOn, nil); k.Requests != 0 || len(k.Keys) != 0 {
		t.Errorf("counts survived --key-stats off: %+v", k)
	}
}

// Turned off by a reload, the drainer forgets every count by itself, without waiting for
// the master to ask.
func TestHotKeysRunForgetsWhenOff(t *testing.T) {
	h := New(time.Now())
	for range 10 {
		recordKey(h, descend.KeyStatsOn, "alice")
	}
	h.mu.Lock()
	h.drainLocked(time.Now())
	h.mu.Unlock()
	var mode atomic.Value
	mode.Store(descend.KeyStatsOn)
	stop := h.Run(func() string { return mode.Load().(string) })
	defer stop()
	recordKey(h, descend.KeyStatsOn, "bob") // in the ring when the mode changes
	mode.Store(descend.KeyStatsOff)
	for deadline := time.Now().Add(10 * time.Second); ; {
		h.mu.Lock()
		held := h.holdsLocked()
		h.mu.Unlock()
		if !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("counts still held 10 s after --key-stats off")
		}
		time.Sleep(hotDrainEvery) // polling a condition, not synchronisation
	}
	if k := h.Snapshot(time.Now(), 0, descend.KeyStatsOn, nil); k.Requests != 0 {
		t.Errorf("after off: %+v", k)
	}
}

// A router made without a counter (as a test or another mode may make one) counts
// nothing and answers "off".
func TestHotKeysNil(t *testing.T) {
	var h *Counter
	recordKey(h, descend.KeyStatsOn, "alice")
	h.Run(func() string { return descend.KeyStatsOn })()
	if k := h.Snapshot(at, 0, descend.KeyStatsOn, nil); k.Mode != descend.KeyStatsOff || len(k.Keys) != 0 {
		t.Errorf("nil snapshot %+v", k)
	}
}

func TestHotKeysWindow(t *testing.T) {
	h := New(at.Add(-time.Hour))
	recordKey(h, descend.KeyStatsOn, "old")
	h.drainLocked(at)
	recordKey(h, descend.KeyStatsOn, "new")
	later := at.Add((hotSteps - 1) * hotStep)
	k := h.Snapshot(later, 0, descend.KeyStatsOn, nil)
	if k.Requests != 2 || len(k.Keys) != 2 {
		t.Fatalf("within the window: %+v", k)
	}
	if k.Window <= (hotSteps-1)*hotStep || k.Window > Window {
		t.Errorf("window %s", k.Window)
	}
	k = h.Snapshot(later.Add(hotStep), 0, descend.KeyStatsOn, nil)
	if k.Requests != 1 || len(k.Keys) != 1 || k.Keys[0].Key != "new" {
		t.Errorf("after the first step left the window: %+v", k)
	}
	if k := h.Snapshot(at.Add(time.Hour), 0, descend.KeyStatsOn, nil); k.Requests != 0 {
		t.Errorf("an hour later: %+v", k)
	}
}

// A full ring drops requests, and the counts are scaled so that shares stay right.
func TestHotKeysFullRing(t *testing.T) {
	h := New(at)
	for i := range 2 * hotRingSize {
		key := "a"
		if i%4 == 0 {
			key = "b"
		}
		recordKey(h, descend.KeyStatsOn, key)
	}
	if g, e := h.dropped.Load(), uint64(hotRingSize); g != e {
		t.Fatalf("dropped %d, want %d", g, e)
	}
	k := h.Snapshot(at, 0, descend.KeyStatsOn, nil)
	if g, e := k.Requests, uint64(2*hotRingSize); g != e {
		t.Errorf("requests %d, want %d", g, e)
	}
	if g, e := k.Keys[0].Count, uint64(2*hotRingSize*3/4); g != e {
		t.Errorf("a: count %d, want %d", g, e)
	}
	// The ring is usable again after a drain.
	recordKey(h, descend.KeyStatsOn, "c")
	if k := h.Snapshot(at, 0, descend.KeyStatsOn, nil); k.Requests != 2*hotRingSize+1 {
		t.Errorf("after a drain: requests %d", k.Requests)
	}
}

// Many goroutines record while the drainer runs: every request is counted or dropped,
// none lost or counted twice.
func TestHotKeysConcurrent(t *testing.T) {
	h := New(time.Now())
	stop := h.Run(func() string { return descend.KeyStatsOn })
	const goroutines, each = 8, 5000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				recordKey(h, descend.KeyStatsOn, fmt.Sprintf("k%d", (g*each+i)%10))
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the recording goroutines did not end within 60 s")
	}
	stop()
	k := h.Snapshot(time.Now(), 0, descend.KeyStatsOn, nil)
	if g, e := k.Requests, uint64(goroutines*each); g != e {
		t.Errorf("requests %d, want %d", g, e)
	}
	var sum uint64
	for _, kc := range k.Keys {
		sum += kc.Count
	}
	if len(k.Keys) != 10 || sum < goroutines*each-10 || sum > goroutines*each+10 {
		t.Errorf("%d keys summing to %d, want 10 summing to about %d", len(k.Keys), sum, goroutines*each)
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	h := New(at)
	key := "some-user-id-0123456789"
	hash := xxhash.Sum64String(key)
	n := 0
	allocs := testing.AllocsPerRun(1000, func() {
		h.Record(descend.KeyStatsOn, hash, key)
		if n++; n%hotRingSize == 0 {
			h.drainLocked(at)
		}
	})
	if allocs != 0 {
		t.Errorf("record allocates %.1f times", allocs)
	}
}

// BenchmarkHotKeysDrain measures the drainer's cost per request, off the request path:
// 2000 keys with a skew, through the ring into Space-Saving.
func BenchmarkHotKeysDrain(b *testing.B) {
	h := New(at)
	keys := make([]string, 2000)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%d", i)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		k := keys[rng.IntN(len(keys))]
		if i%3 == 0 {
			k = keys[0]
		}
		recordKey(h, descend.KeyStatsOn, k)
		if i%hotRingSize == hotRingSize-1 {
			h.drainLocked(at)
		}
	}
}

// Discard frees a full ring without counting what it held; Dropped tells what a full ring
// turned away.
func TestHotKeysDiscard(t *testing.T) {
	h := New(at)
	for range hotRingSize + 3 {
		recordKey(h, descend.KeyStatsOn, "a")
	}
	if g, e := h.Dropped(), uint64(3); g != e {
		t.Fatalf("dropped %d, want %d", g, e)
	}
	h.Discard()
	recordKey(h, descend.KeyStatsOn, "b")
	if g, e := h.Dropped(), uint64(3); g != e {
		t.Errorf("after Discard: dropped %d, want %d (the ring has room again)", g, e)
	}
	k := h.Snapshot(at, 0, descend.KeyStatsOn, nil)
	if len(k.Keys) != 1 || k.Keys[0].Key != "b" {
		t.Errorf("after Discard, the snapshot counts %+v; want b alone", k.Keys)
	}
}
