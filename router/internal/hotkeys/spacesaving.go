package hotkeys

import (
	"cmp"
	"container/heap"
	"slices"
)

// spaceSaving is Metwally, Agrawal and El Abbadi's Space-Saving summary ("Efficient
// Computation of Frequent and Top-k Elements in Data Streams", 2005): at most capacity
// counters; a key not tracked takes over the counter with the smallest count and starts
// from it. Any key's count is then at most total/capacity above its true count, and a key
// seen more than total/capacity times is always tracked. Keys are identified by their
// 64-bit routing hash. It is not safe for concurrent use: one goroutine owns it.
type spaceSaving struct {
	capacity int
	period   int64 // the time step it counts (see Counter)
	total    uint64
	byHash   map[uint64]int // hash → position in heap
	heap     ssHeap
}

// ssEntry is one counter.
type ssEntry struct {
	hash  uint64
	count uint64
	key   string
}

func newSpaceSaving(capacity int) *spaceSaving {
	s := &spaceSaving{capacity: capacity, byHash: make(map[uint64]int, capacity)}
	s.heap.byHash = s.byHash
	return s
}

// reset empties the summary for another period, keeping its memory.
func (s *spaceSaving) reset(period int64) {
	s.period, s.total = period, 0
	clear(s.byHash)
	s.heap.e = s.heap.e[:0]
}

// add counts n occurrences of the key with hash h; key, its printable form, is copied only
// when the key gets a counter.
func (s *spaceSaving) add(h uint64, n uint64, key []byte) {
	s.total += n
	if i, ok := s.byHash[h]; ok {
		s.heap.e[i].count += n
		heap.Fix(&s.heap, i)
		return
	}
	if len(s.heap.e) < s.capacity {
		heap.Push(&s.heap, ssEntry{hash: h, count: n, key: string(key)})
		return
	}
	// Take over the smallest counter: the newcomer may have been seen up to its count
	// times while untracked.
	low := &s.heap.e[0]
	delete(s.byHash, low.hash)
	low.hash, low.count, low.key = h, low.count+n, string(key)
	s.byHash[h] = 0
	heap.Fix(&s.heap, 0)
}

// maxError is the bound on any count's error: the smallest count once every counter is
// in use (Space-Saving's guarantee), else 0 (every key is counted exactly).
func (s *spaceSaving) maxError() uint64 {
	if len(s.heap.e) < s.capacity {
		return 0
	}
	return s.heap.e[0].count
}

// entries appends the counters to dst, in no order.
func (s *spaceSaving) entries(dst []ssEntry) []ssEntry {
	return append(dst, s.heap.e...)
}

// ssHeap is a min-heap of counters by count that keeps byHash up to date.
type ssHeap struct {
	e      []ssEntry
	byHash map[uint64]int
}

func (h *ssHeap) Len() int           { return len(h.e) }
func (h *ssHeap) Less(i, j int) bool { return h.e[i].count < h.e[j].count }
func (h *ssHeap) Swap(i, j int) {
	h.e[i], h.e[j] = h.e[j], h.e[i]
	h.byHash[h.e[i].hash] = i
	h.byHash[h.e[j].hash] = j
}
func (h *ssHeap) Push(x any) {
	e := x.(ssEntry)
	h.byHash[e.hash] = len(h.e)
	h.e = append(h.e, e)
}
func (h *ssHeap) Pop() any {
	e := h.e[len(h.e)-1]
	h.e = h.e[:len(h.e)-1]
	delete(h.byHash, e.hash)
	return e
}

// hottest sorts counters by count, highest first, ties by hash for a stable order.
func hottest(es []ssEntry) {
	slices.SortFunc(es, func(a, b ssEntry) int {
		return cmp.Or(cmp.Compare(b.count, a.count), cmp.Compare(a.hash, b.hash))
	})
}
