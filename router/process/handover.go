package process

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/olio-dev/olio/router/keys"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/olio-dev/olio/descend"
)

// Exclusive hand-over (--handover exclusive, the default): a key is never served by two
// processes at once. A membership change is committed in two phases:
//
//  1. Prepare: every router learns the coming worker count. From then on it holds each new
//     request whose owner changes with it, and it waits until every request it routed
//     before the prepare has finished (wherever it was served), then acknowledges.
//  2. Commit: the new membership; held requests go on to their new owner.
//
// Once every router has acknowledged, no request routed under the old count is still in
// flight anywhere, so the new owner of a moving key starts only after the old owner has
// finished. Only moving keys wait; the others are routed as usual throughout. Requests
// are counted by generation, not by key: a prepare starts a new generation and waits for
// the old one to drain.
//
// An embedded worker's replacement (rolling restart) starts held: it serves its own keys
// only once the master releases it, after the process it replaces has drained.
//
// Upgraded connections (WebSocket) cannot be finished by waiting: they are not counted by
// generation; the old owner ends those of moving keys (upgrades.go) after the app's notice
// and --upgrade-grace, before it acknowledges, while their keys' new requests are held.

// generation counts the requests routed since a prepare (or since the start).
type generation struct{ n atomic.Int64 }

// handover is a router's side of the two-phase membership change.
type handover struct {
	cur     atomic.Pointer[generation]
	pending atomic.Pointer[membership] // the prepared membership, nil when none

	mu       sync.Mutex
	released chan struct{} // closed when the pending membership is committed or dropped
	held     bool          // a replacement: own keys wait for release
	limit    *time.Timer   // releases a held replacement nobody releases
	expire   *time.Timer   // drops a prepared change whose commit never comes
	// heldDone is closed by release; read on every local request without the lock.
	heldDone atomic.Pointer[chan struct{}]
	lastHold time.Duration // how long the last prepare took, for status
}

func newHandover() *handover {
	h := &handover{released: make(chan struct{})}
	done := make(chan struct{})
	close(done)
	h.heldDone.Store(&done)
	h.cur.Store(new(generation))
	return h
}

// enter counts a request in the current generation; the caller must call leave on the
// result. The re-check closes the race with a prepare that swaps the generation between
// the load and the count: a request counted in the old generation after the prepare
// looked is moved to the new one, and routes by the pending membership.
func (h *handover) enter() *generation {
	for {
		g := h.cur.Load()
		g.n.Add(1)
		if h.cur.Load() == g {
			return g
		}
		g.n.Add(-1)
	}
}

func (g *generation) leave() { g.n.Add(-1) }

// hold returns the channel a request whose key (by its xxhash64, hash) changes owner from
// owner must wait on before it is routed again, or nil when it need not wait.
func (h *handover) hold(hash uint64, owner int) <-chan struct{} {
	p := h.pending.Load()
	if p == nil || keys.Jump(hash, p.workers) == owner {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pending.Load() != p {
		return nil // committed meanwhile: route again now
	}
	return h.released
}

// prepare records the coming membership and waits, up to ctx, until the requests routed
// before it have finished.
func (h *handover) prepare(ctx context.Context, next *membership, expire time.Duration) error {
	h.mu.Lock()
	if h.pending.Load() != nil { // a change prepared and never committed: its holds end
		h.dropLocked()
	}
	h.pending.Store(next)
	// A change whose commit never comes (the master stopped in between) does not hold
	// moving keys for ever.
	h.expire = time.AfterFunc(expire, func() { h.drop(next) })
	old := h.cur.Swap(new(generation))
	h.mu.Unlock()
	start := time.Now()
	defer func() {
		h.mu.Lock()
		h.lastHold = time.Since(start)
		h.mu.Unlock()
	}()
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for old.n.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d requests routed before the change still running after %s", old.n.Load(), time.Since(start).Round(time.Millisecond))
		case <-t.C:
		}
	}
	return nil
}

// commit drops the pending membership (the new one is in force, or the change was
// called off) and releases the requests held for it.
func (h *handover) commit() { h.drop(nil) }

// drop is commit when p is nil; otherwise it drops the pending membership only if it is
// still p (a prepare whose commit never came).
func (h *handover) drop(p *membership) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur := h.pending.Load(); cur != nil && (p == nil || cur == p) {
		h.dropLocked()
	}
}

// dropLocked drops the pending membership and stops its expiry; h.mu must be held.
func (h *handover) dropLocked() {
	h.pending.Store(nil)
	close(h.released)
	h.released = make(chan struct{})
	if h.expire != nil {
		h.expire.Stop()
		h.expire = nil
	}
}

// startHeld makes an embedded replacement hold its own keys until release, or until
// limit passes (the master that should release it is gone or failed): then onLimit is
// called and the keys are released all the same.
func (h *handover) startHeld(limit time.Duration, onLimit func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.held {
		h.held = true
		done := make(chan struct{})
		h.heldDone.Store(&done)
		h.limit = time.AfterFunc(limit, func() {
			select {
			case <-done:
			default:
				onLimit()
				h.release()
			}
		})
	}
}

// release lets a held replacement serve its own keys.
func (h *handover) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held {
		h.held = false
		close(*h.heldDone.Load())
		h.limit.Stop()
	}
}

// ownKeys is closed once this process may serve its own keys. It takes no lock: every
// local request asks.
func (h *handover) ownKeys() <-chan struct{} { return *h.heldDone.Load() }

// lastHoldTime is how long the last prepare held moving keys.
func (h *handover) lastHoldTime() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastHold
}

// waitHeld waits on ch up to the forward timeout; false means the request got its 503.
func (r *Router) waitHeld(w http.ResponseWriter, req *http.Request, ch <-chan struct{}, what string) bool {
	select {
	case <-ch:
		return true
	default:
	}
	r.counters.held.Add(1)
	t := time.NewTimer(r.conf().ForwardTimeout)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-req.Context().Done():
		w.WriteHeader(499) // the client went away while held: logged as such, not as a 200
		return false
	case <-t.C:
		w.Header().Set("Retry-After", "1")
		r.fail(w, http.StatusServiceUnavailable, fmt.Sprintf("olio: %s (waited %s)", what, r.conf().ForwardTimeout))
		return false
	}
}

// exclusive reports whether keys are handed over exclusively (--handover exclusive).
func (r *Router) exclusive() bool { return r.conf().Handover != HandoverOverlap }

// Handover modes (--handover).
const (
	HandoverExclusive = "exclusive" // a key is never served by two processes at once
	HandoverOverlap   = "overlap"   // no pause: old and new owner may overlap briefly
)

// onPrepare is the first phase of a membership change: hold the keys that move, wait for
// the requests routed before, tell the app, acknowledge.
func (r *Router) onPrepare(m descend.Message) error {
	p := m.(*descend.Prepare)
	r.spawn(func() {
		ctx, cancel := context.WithTimeout(context.Background(), r.conf().ForwardTimeout)
		defer cancel()
		res := &descend.Result{ID: p.ID}
		next := &membership{epoch: p.Epoch, workers: p.Workers}
		err := r.handover.prepare(ctx, next, 2*r.conf().ForwardTimeout)
		if err == nil && p.Workers != r.workers() {
			var moving []*liveUpgrade
			if r.exclusive() {
				moving = r.movingUpgrades(p.Workers)
			}
			err = r.notifyApp(ctx, Handover{Index: r.index, Epoch: p.Epoch, Workers: r.workers(), NewWorkers: p.Workers, Reason: "scale", Upgrades: len(moving)}, r.apps.current.Load())
			// The old owner's connections of moving keys end before the commit lets the new
			// owner serve them.
			r.endLeaving(ctx, moving)
		}
		if err != nil {
			res.Error = err.Error()
		}
		r.sendOrLog(res)
	})
	return nil
}

// onRelease lets an embedded replacement serve its own keys: the process it replaces has
// drained.
func (r *Router) onRelease(m descend.Message) error {
	r.handover.release()
	r.logger.Debug("released: serving own keys")
	return r.ctl.Send(&descend.Result{ID: m.(*descend.Release).ID})
}

// Handover tells an app that keys are about to leave its process, so it can save or hand
// over their state: on a scale, the keys jump hash moves from NewWorkers' point of view
// (Workers → NewWorkers); on a rolling restart of this worker (Reason "restart"), every key
// it owns, to the process that replaces it.
type Handover struct {
	Index      int    `json:"index"`       // this worker
	Epoch      uint64 `json:"epoch"`       // the membership epoch the change commits
	Workers    int    `json:"workers"`     // the count now
	NewWorkers int    `json:"new_workers"` // the count after the change
	Reason     string `json:"reason"`      // "scale" or "restart"
	// Upgrades is how many upgraded connections (WebSocket) of the moving keys this process
	// holds: under --handover exclusive olio ends them --upgrade-grace after this notice.
	Upgrades int `json:"upgrades"`
}

// notifyApp tells the app about a hand-over: the embedded service's OnHandover, or a POST of the
// Handover as JSON to --handover-path on the app instance inst. Errors are logged, not
// returned: a hand-over never waits past ctx for an app.
func (r *Router) notifyApp(ctx context.Context, h Handover, inst *instance) error {
	if r.handler != nil {
		if r.embed != nil && r.embed.OnHandover != nil {
			if err := r.embed.OnHandover(ctx, h); err != nil {
				r.logger.Warn("hand-over hook failed", "reason", h.Reason, "err", err)
			}
		}
		return nil
	}
	path := r.conf().HandoverPath
	if path == "" || inst == nil {
		return nil
	}
	body, _ := json.Marshal(h)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1:"+strconv.Itoa(inst.port)+path, bytes.NewReader(body))
	if err != nil {
		return nil
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := inst.transport.RoundTrip(req)
	if err != nil {
		r.logger.Warn("hand-over notice to the app failed", "path", path, "reason", h.Reason, "err", err)
		return nil
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		r.logger.Warn("hand-over notice: the app answered", "path", path, "status", resp.StatusCode)
	}
	return nil
}

// isUpgrade reports whether req asks for a protocol switch (WebSocket): such a connection
// lives on after its request and is not waited for by a hand-over.
func isUpgrade(req *http.Request) bool { return req.Header.Get("Upgrade") != "" }

// setLastHold records how long a hand-over held keys (an app instance's switch).
func (h *handover) setLastHold(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastHold = d
}
