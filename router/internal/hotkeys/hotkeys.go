// Package hotkeys counts the keys a router serves as their owner (--key-stats), so that
// `olio keys` can say which keys load which worker and `olio scale N --dry-run` what a
// resize would move.
//
// The request path only puts the key's hash and first bytes into a bounded ring
// (Vyukov's bounded queue: one compare-and-swap, no lock, no allocation); the ring's one
// consumer, a goroutine woken every hotDrainEvery, feeds them to Space-Saving summaries,
// one per step of the window. When the ring is full a request is not counted but tallied
// as dropped, and the counts are scaled up by the dropped share, which keeps the shares
// right. Memory per router is fixed: the ring (hotRingSize 64-byte slots, 128 KiB) and
// hotSteps summaries of hotCapacity counters.
package hotkeys

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/olio-dev/olio/descend"
)

const (
	hotRingSize   = 2048                  // ring slots (a power of two)
	hotKeyBytes   = 47                    // bytes of a key kept: a slot is one cache line
	hotCapacity   = 128                   // Space-Saving counters per step
	hotSteps      = 6                     // the window is hotSteps steps of hotStep
	hotStep       = 10 * time.Second      // so the window is the last 50 to 60 seconds
	hotDrainEvery = 50 * time.Millisecond // 40,000 requests/s before the ring overflows
)

// Window is how far back `olio keys` looks: counts cover the last Window, less up to one
// step of it.
const Window = hotSteps * hotStep

// Capacity is the number of keys each worker tracks per step of the window. A key's count
// is at most 1/Capacity of its worker's requests in the window from the truth.
const Capacity = hotCapacity

// hotSlot is one entry of the ring, one cache line. Its seq is Vyukov's sequence number
// less the slot's index, so that the zero ring is empty (and costs no memory until used):
// for the position p = lap×hotRingSize + index, seq is lap×hotRingSize when the slot is
// free for p, one more when p is in it.
type hotSlot struct {
	seq  atomic.Uint64
	hash uint64
	n    uint8 // the key's length capped at 255: above hotKeyBytes, the key was cut
	key  [hotKeyBytes]byte
}

// Counter counts the keys a router serves as owner. Record is safe for concurrent use;
// the rest runs under mu. A nil *Counter counts nothing.
type Counter struct {
	_       [64]byte // tail and dropped each on their own cache line
	tail    atomic.Uint64
	_       [56]byte
	dropped atomic.Uint64
	_       [56]byte
	ring    [hotRingSize]hotSlot

	mu      sync.Mutex
	head    uint64 // the next position to read
	steps   [hotSteps]*spaceSaving
	drops   [hotSteps]uint64 // requests dropped in each step
	started time.Time        // counts before it do not exist
}

// New is a Counter whose counts begin at now.
func New(now time.Time) *Counter {
	t := &Counter{started: now}
	for i := range t.steps {
		t.steps[i] = newSpaceSaving(hotCapacity)
		t.steps[i].period = -1
	}
	return t
}

// Record counts one request for the key with routing hash h, under the --key-stats mode:
// nothing when off, the hash alone when hashed. It never blocks or allocates.
func (t *Counter) Record(mode string, h uint64, key string) {
	if t == nil {
		return
	}
	switch mode {
	case descend.KeyStatsOn:
	case descend.KeyStatsHashed:
		key = ""
	default:
		return
	}
	pos := t.tail.Load()
	for {
		s, lap := &t.ring[pos%hotRingSize], pos/hotRingSize*hotRingSize
		switch seq := s.seq.Load(); {
		case seq == lap:
			if t.tail.CompareAndSwap(pos, pos+1) {
				s.hash = h
				s.n = uint8(min(len(key), 255))
				copy(s.key[:], key)
				s.seq.Store(lap + 1)
				return
			}
		case seq < lap: // the slot still holds an entry from one lap before: full
			t.dropped.Add(1)
			return
		}
		pos = t.tail.Load()
	}
}

// Run drains the ring every hotDrainEvery, or forgets every count while mode says
// off, until the returned stop is called; stop waits for it to end.
func (t *Counter) Run(mode func() string) (stop func()) {
	if t == nil {
		return func() {}
	}
	done, quit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(hotDrainEvery)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case now := <-tick.C:
				t.mu.Lock()
				if m := mode(); m == descend.KeyStatsOn || m == descend.KeyStatsHashed {
					t.drainLocked(now)
				} else if t.holdsLocked() {
					t.resetLocked(now)
				}
				t.mu.Unlock()
			}
		}
	}()
	return func() { close(quit); <-done }
}

func hotPeriod(now time.Time) int64 { return now.UnixNano() / int64(hotStep) }

// stepLocked is the summary for period p, emptied first if it held an older one.
func (t *Counter) stepLocked(p int64) (*spaceSaving, *uint64) {
	i := int(p % hotSteps)
	if st := t.steps[i]; st.period != p {
		st.reset(p)
		t.drops[i] = 0
	}
	return t.steps[i], &t.drops[i]
}

// drainLocked moves what the ring holds into the summary of now's step. A run of the
// same key (a hot key's requests often follow each other) is counted in one go.
func (t *Counter) drainLocked(now time.Time) {
	st, drops := t.stepLocked(hotPeriod(now))
	var (
		buf     [hotKeyBytes + len("…")]byte
		key     []byte // the run's key, in buf
		runHash uint64
		run     uint64 // requests in the run
	)
	for {
		s, lap := &t.ring[t.head%hotRingSize], t.head/hotRingSize*hotRingSize
		if s.seq.Load() != lap+1 {
			break
		}
		if run == 0 || s.hash != runHash {
			if run > 0 {
				st.add(runHash, run, key)
			}
			n := int(s.n)
			key = buf[:copy(buf[:], s.key[:min(n, hotKeyBytes)])]
			if n > hotKeyBytes {
				key = append(cutRune(key), "…"...)
			}
			runHash, run = s.hash, 0
		}
		run++
		s.seq.Store(lap + hotRingSize)
		t.head++
	}
	if run > 0 {
		st.add(runHash, run, key)
	}
	*drops += t.dropped.Swap(0)
}

// cutRune drops the start of a UTF-8 sequence that cutting a key at hotKeyBytes left
// incomplete at its end.
func cutRune(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i]
			}
			break
		}
	}
	return b
}

// holdsLocked says whether any count is held.
func (t *Counter) holdsLocked() bool {
	for _, st := range t.steps {
		if st.period >= 0 {
			return true
		}
	}
	return t.tail.Load() != t.head
}

// resetLocked forgets every count (--key-stats off).
func (t *Counter) resetLocked(now time.Time) {
	t.drainLocked(now)
	for i, st := range t.steps {
		st.reset(-1)
		t.drops[i] = 0
	}
}

// Snapshot is the summary of the window ending at now, hottest first, at most top keys (0:
// all), as the --key-stats mode shows it; hashed keys are shown as a digest keyed by secret.
func (t *Counter) Snapshot(now time.Time, top int, mode string, secret []byte) *descend.Keys {
	if t == nil {
		return &descend.Keys{Mode: descend.KeyStatsOff}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if mode != descend.KeyStatsOn && mode != descend.KeyStatsHashed {
		t.resetLocked(now)
		return &descend.Keys{Mode: descend.KeyStatsOff}
	}
	t.drainLocked(now)
	p := hotPeriod(now)
	from := time.Unix(0, (p-hotSteps+1)*int64(hotStep))
	if from.Before(t.started) {
		from = t.started
	}
	k := &descend.Keys{Mode: mode, Window: now.Sub(from)}
	var counted, dropped uint64
	merged := make(map[uint64]ssEntry)
	for i, st := range t.steps {
		if st.period <= p-hotSteps || st.period > p {
			continue
		}
		counted += st.total
		dropped += t.drops[i]
		k.MaxError += st.maxError()
		for _, e := range st.heap.e {
			m := merged[e.hash]
			m.hash, m.count = e.hash, m.count+e.count
			if m.key == "" {
				m.key = e.key
			}
			merged[e.hash] = m
		}
	}
	es := make([]ssEntry, 0, len(merged))
	for _, e := range merged {
		es = append(es, e)
	}
	hottest(es)
	if top > 0 && len(es) > top {
		es = es[:top]
	}
	// Requests dropped from a full ring were not counted: scale the counts to them.
	scale := func(n uint64) uint64 {
		if dropped == 0 || counted == 0 {
			return n
		}
		return uint64(float64(n)*float64(counted+dropped)/float64(counted) + 0.5)
	}
	k.Requests = counted + dropped
	k.MaxError = scale(k.MaxError)
	k.Keys = make([]descend.KeyCount, len(es))
	for i, e := range es {
		key := e.key
		if mode == descend.KeyStatsHashed || key == "" {
			key = KeyDigest(secret, e.hash)
		}
		k.Keys[i] = descend.KeyCount{Key: key, Hash: e.hash, Count: scale(e.count)}
	}
	return k
}

// KeyDigest is how --key-stats hashed shows a key: "#" and 16 hex digits of
// HMAC-SHA256(secret, xxhash64(key)). It is the same in every worker and every call while
// the secret stays, and without the secret it cannot be checked against guessed keys.
func KeyDigest(secret []byte, h uint64) string {
	m := hmac.New(sha256.New, secret)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], h)
	m.Write(b[:])
	return "#" + hex.EncodeToString(m.Sum(nil)[:8])
}

// Dropped is the number of requests dropped from a full ring since the last drain.
func (t *Counter) Dropped() uint64 { return t.dropped.Load() }

// Discard frees the ring's filled slots without counting them: benchmarks of the request
// path use it to stand for a drainer that keeps up, at a cost of their own that is small
// and known.
func (t *Counter) Discard() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		s, lap := &t.ring[t.head%hotRingSize], t.head/hotRingSize*hotRingSize
		if s.seq.Load() != lap+1 {
			return
		}
		s.seq.Store(lap + hotRingSize)
		t.head++
	}
}
