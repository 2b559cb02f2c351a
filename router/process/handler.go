package process

import (
	"context"
	"fmt"
	"github.com/olio-dev/olio/router/internal/httprules"
	"github.com/olio-dev/olio/router/internal/peerwire"
	"github.com/olio-dev/olio/router/keys"
	"net/http"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/olio-dev/olio/router/internal/accesslog"
)

// ServeHTTP is the public side: route by direct address or key, then serve locally or
// forward to the owner.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	set := r.settings()
	markRequest(req, set.forwardAllow)
	httprules.DropLookalikes(req.Header, set.keyHeader())
	closeIfAmbiguous(w, req)
	if r.headerTooLarge(w, req) {
		return
	}
	if a := r.beginAccess(w, req); a != nil { // the access log is on
		defer a.end()
		r.route(&a.w, req, a)
		return
	}
	r.route(w, req, nil)
}

// route routes a public request; a records it for the access log (nil: the log is off).
func (r *Router) route(w http.ResponseWriter, req *http.Request, a *accessLogging) {
	var g *generation    // the hand-over generation the request counts in; nil: none
	if !isUpgrade(req) { // an upgraded connection is not waited for by a hand-over
		g = r.handover.enter()
		defer func() { g.leave() }() // the one it is in when it ends
	}
	workers := r.workers()
	target := r.index
	if idx, ok := req.Header[HeaderIndex]; ok {
		a.route(RouteDirect, accesslog.WorkerNone)
		if !secretOK(r.settings().secret, req.Header[HeaderSecret]) {
			r.fail(w, http.StatusForbidden, "olio: X-Olio-Index needs the right X-Olio-Secret")
			return
		}
		if len(idx) == 1 && idx[0] == FanoutIndex { // every worker answers
			a.route(RouteFanout, accesslog.WorkerAll)
			r.fanout(w, req)
			return
		}
		i, ok := parseIndex(idx[0], workers)
		if len(idx) != 1 || !ok {
			r.fail(w, http.StatusBadRequest, fmt.Sprintf("olio: X-Olio-Index must be one whole number from 0 to %d", workers-1))
			return
		}
		target = i
		a.route(RouteDirect, target)
	} else if key, ok := r.settings().key.Extract(req); ok && workers > 0 {
		h := xxhash.Sum64String(key)
		a.setKey(h, key) // first: a request held, then given up, is logged with its key
		target = keys.Jump(h, workers)
		if ch := r.handover.hold(h, target); ch != nil && r.exclusive() {
			// Its owner is changing: wait until the old one has finished. Held, it has gone
			// nowhere yet, so the prepare holding it must not wait for it: it leaves its
			// generation while it waits (else the two wait on each other until
			// --forward-timeout), and counts in the current one from then on.
			if g != nil {
				g.leave()
			}
			ok := r.waitHeld(w, req, ch, "the owner of this key is changing")
			if g != nil {
				g = r.handover.enter()
			}
			if !ok {
				return
			}
			workers = r.workers()
			if workers == 0 {
				w.Header().Set("Retry-After", "1")
				r.fail(w, http.StatusServiceUnavailable, "olio: no workers")
				return
			}
			target = keys.Jump(h, workers)
		}
		r.countKey(h, key, target)
		if target != r.index && r.tryHandOff(w, req, target) {
			if a != nil {
				a.skip = true // the owner logs it (or this router, when it serves the connection again)
			}
			return
		}
		if target != r.index {
			a.route(RouteForwarded, target)
		}
	}
	stripOlio(req.Header)
	w, req = r.boundClient(w, req) // --body-timeout
	if b, ok := req.Context().Value(timedBodyKey{}).(*timedBody); ok {
		defer b.over.Store(true)
	}
	if target == r.index {
		r.serveLocal(w, req, nil)
		return
	}
	r.counters.forwardedOut.Add(1)
	ctx := context.WithValue(a.forward(req.Context()), ownerKey{}, target)
	r.forward(w, req.WithContext(ctx))
}

// servePeer serves a request a peer forwarded (peerServer: the private side, reached only
// through this router's mux socket, the stream's secret checked). This worker owns it, so
// it serves it locally, never forwarding again, so a membership change in flight cannot
// make a loop. flags are the request head's (peerwire.Timed); req's context has fromPeer.
func (r *Router) servePeer(w http.ResponseWriter, req *http.Request, flags uint64) {
	if flags&peerwire.Timed != 0 {
		// The accepting router logs the request and asks for this app's time.
		w = &accesslog.Writer{ResponseWriter: w, Peer: true}
	}
	stripOlio(req.Header)
	r.counters.forwardedIn.Add(1)
	r.countForwarded(req)
	r.serveLocal(w, req, nil)
}

// serveLocal serves a request through this worker's app, waiting up to the forward timeout
// for an app that is starting or restarting. avoid is an instance known to be dead.
func (r *Router) serveLocal(w http.ResponseWriter, req *http.Request, avoid *instance) {
	// A replacement (embedded rolling restart, hot upgrade) serves its own keys once the
	// process it replaces has drained.
	if !r.waitHeld(w, req, r.handover.ownKeys(), r.takingOver) {
		return
	}
	if r.handler != nil {
		httprules.SetForwarded(req.Header, forwardedOf(req)) // as an app child would get them
		if isUpgrade(req) && req.Context().Value(liveKey{}) == nil {
			// The handler's hijacked connection is tracked by its key: a hand-over that
			// moves the key closes it after the grace (olio cannot write a close frame into
			// a connection the handler writes; the notice's Upgrades tells the handler first).
			var done func()
			w, req, done = r.trackUpgrade(w, req, nil)
			defer done()
		}
		r.serveHandler(w, req) // the embedded handler, in-process
		return
	}
	inst := r.apps.acquire(req.Context(), r.conf().ForwardTimeout, avoid)
	if inst == nil {
		if req.Context().Err() != nil {
			w.WriteHeader(499) // the client went away while held: logged as such, not as a 200
			return
		}
		w.Header().Set("Retry-After", "1")
		r.fail(w, http.StatusServiceUnavailable, fmt.Sprintf("olio: worker %d's app is not ready (waited %s)", r.index, r.conf().ForwardTimeout))
		return
	}
	r.counters.inFlight.Add(1)
	if isUpgrade(req) {
		inst.upgraded.Add(1)
		defer inst.upgraded.Add(-1)
		if req.Context().Value(liveKey{}) == nil { // a retry's is the outer call's
			var done func()
			w, req, done = r.trackUpgrade(w, req, inst)
			defer done()
		}
	}
	start := time.Now()
	retry := req.Context().Value(retried) != nil          // the outer call counts the request once
	up, _ := req.Context().Value(upgradeKey{}).(*upgrade) // a retry's is the outer call's
	if up == nil && isUpgrade(req) {                      // only a request that asks may be answered 101
		up = &upgrade{c: r.counters}
		req = req.WithContext(context.WithValue(req.Context(), upgradeKey{}, up))
	}
	if r.conf().RequestTimeout > 0 && !retry {
		// Bounds the wait for the answer, not a long body or a WebSocket.
		var stop func()
		req, stop = withAnswerTimeout(req, r.conf().RequestTimeout)
		defer stop()
	}
	// Deferred: serveApp panics with http.ErrAbortHandler when the answer breaks off
	// mid-response, and the counts must come down all the same (else a drain waits forever).
	defer func() {
		inst.inFlight.Add(-1)
		r.counters.inFlight.Add(-1)
		if !retry && !up.end() {
			r.counters.served.Add(1)
			r.counters.duration.Observe(time.Since(start).Seconds())
		}
	}()
	accesslog.StartApp(w)    // the app's share of the time starts here
	r.serveApp(w, req, inst) // appserve.go
}
