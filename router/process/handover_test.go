package process

import (
	"context"
	"github.com/olio-dev/olio/router/keys"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// A prepare waits for the requests counted before it, not for those after it.
func TestHandoverPrepareWaitsForEarlierRequests(t *testing.T) {
	h := newHandover()
	before := h.enter()
	done := make(chan error, 1)
	go func() { done <- h.prepare(context.Background(), &membership{epoch: 2, workers: 3}, time.Hour) }()
	// A request that enters after the prepare is not waited for.
	var after *generation
	waitUntil(t, "the prepare starts", func() bool { return h.pending.Load() != nil })
	after = h.enter()
	select {
	case err := <-done:
		t.Fatalf("prepare returned (%v) while a request from before it was running", err)
	case <-time.After(20 * time.Millisecond): // a negative check: nothing may happen
	}
	before.leave()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("prepare did not return once the earlier request finished")
	}
	after.leave()
}

// A prepare gives up at its context's end and says how many requests were left.
func TestHandoverPrepareTimesOut(t *testing.T) {
	h := newHandover()
	g := h.enter()
	defer g.leave()
	ctx, cancel := context.WithDeadline(context.Background(), time.Now())
	defer cancel()
	if err := h.prepare(ctx, &membership{epoch: 2, workers: 2}, time.Hour); err == nil {
		t.Fatal("prepare with a request running and no time left succeeded")
	}
}

// Only the keys whose owner changes are held, until the commit.
func TestHandoverHoldsMovingKeysOnly(t *testing.T) {
	h := newHandover()
	if ch := h.hold(xxhash.Sum64String("k"), keys.Owner("k", 2)); ch != nil {
		t.Fatal("a key is held with no change prepared")
	}
	h.pending.Store(&membership{epoch: 2, workers: 3})
	moving, staying := 0, 0
	var held <-chan struct{}
	for i := 0; i < 200; i++ {
		key := "key-" + strconv.Itoa(i)
		ch := h.hold(xxhash.Sum64String(key), keys.Owner(key, 2))
		if (keys.Owner(key, 3) != keys.Owner(key, 2)) != (ch != nil) {
			t.Fatalf("key %s: held %v, but its owner goes %d → %d", key, ch != nil, keys.Owner(key, 2), keys.Owner(key, 3))
		}
		if ch != nil {
			moving++
			held = ch
		} else {
			staying++
		}
	}
	if moving == 0 || staying == 0 {
		t.Fatalf("moving %d, staying %d: the test did not test anything", moving, staying)
	}
	h.commit()
	select {
	case <-held:
	default:
		t.Fatal("commit did not release the held keys")
	}
	if h.pending.Load() != nil {
		t.Fatal("a membership is still pending after the commit")
	}
}

// A held replacement serves its own keys on release, or at its limit.
func TestHandoverHeldUntilRelease(t *testing.T) {
	h := newHandover()
	select {
	case <-h.ownKeys():
	default:
		t.Fatal("a router that is not a replacement holds its keys")
	}
	h.startHeld(time.Hour, func() { t.Error("limit reached") })
	ch := h.ownKeys()
	select {
	case <-ch:
		t.Fatal("a held replacement serves its keys before release")
	default:
	}
	h.release()
	select {
	case <-ch:
	default:
		t.Fatal("release did not let the replacement serve")
	}
	limited := make(chan struct{})
	h2 := newHandover()
	h2.startHeld(time.Millisecond, func() { close(limited) })
	select {
	case <-h2.ownKeys():
	case <-time.After(5 * time.Second):
		t.Fatal("a replacement nobody releases stays held past its limit")
	}
	waitDone(t, limited, 5*time.Second, "the hold's limit to be reported")
}

// A prepared change whose commit never comes is dropped by drop, and only that one.
func TestHandoverDropsOnlyItsOwnChange(t *testing.T) {
	h := newHandover()
	first, second := &membership{epoch: 2, workers: 3}, &membership{epoch: 3, workers: 4}
	h.pending.Store(first)
	h.drop(second)
	if h.pending.Load() != first {
		t.Fatal("drop of another change dropped the pending one")
	}
	h.drop(first)
	if h.pending.Load() != nil {
		t.Fatal("drop of the pending change left it pending")
	}
}

// A request held for a moving key has gone nowhere yet: it does not count among the
// requests a prepare waits for (else the prepare and the request would wait on each other
// until --forward-timeout). Once released it is served.
func TestHeldRequestNotWaitedForByPrepare(t *testing.T) {
	tc := newTestCluster(t, 1, 10*time.Second)
	r := tc.routers[0]
	p := &membership{epoch: 2, workers: 2}
	r.handover.mu.Lock()
	r.handover.pending.Store(p)
	r.handover.mu.Unlock()
	done := make(chan int, 1)
	go func() {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("X-Olio-Key", keyOwnedBy(1, 2)) // moves from worker 0 to worker 1
		rec, _ := tc.do(0, req)
		done <- rec.Code
	}()
	waitUntil(t, "the request is held", func() bool { return r.counters.held.Load() > 0 })
	if n := r.handover.cur.Load().n.Load(); n != 0 {
		t.Errorf("%d requests count in the hand-over's generation while the only one is held: a prepare would wait for it", n)
	}
	r.handover.drop(p) // released: the key is routed by the old count again (the change was dropped)
	select {
	case code := <-done:
		if code != http.StatusOK {
			t.Errorf("the released request: %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the released request had no answer within 10s")
	}
	if n := r.handover.cur.Load().n.Load(); n != 0 {
		t.Errorf("%d requests still count in the generation after the answer", n)
	}
}
