package listener

import (
	"fmt"
	"net/http"
	"time"

	"github.com/olio-dev/olio/descend"
)

// readiness says whether a front (a load balancer hashing keys to hosts) should send this
// host requests: yes while every member worker has an app serving and olio is not
// stopping. Otherwise reason says why not, in one line. A worker whose app is being
// replaced by a rolling restart still serves with its old app, so it counts as ready; one
// whose app crashed, or whose router is gone, does not until it is ready again.
func (m *Master) readiness() (ok bool, reason string) {
	v := m.snapshot()
	switch {
	case m.life.Err() != nil:
		return false, "olio is stopping"
	case v.members == 0:
		return false, "no workers (scaled to zero)"
	}
	notReady, first := 0, -1
	for _, w := range v.workers[:min(v.members, len(v.workers))] {
		if !w.serving() {
			notReady++
			if first < 0 {
				first = w.index
			}
		}
	}
	if notReady > 0 {
		return false, fmt.Sprintf("%d of %d workers not ready (worker %d first)", notReady, v.members, first)
	}
	return true, fmt.Sprintf("%d workers ready", v.members)
}

// serveReady answers GET /ready for a front's health check: 200 when ready, else 503, with
// a one-line reason either way.
func (m *Master) serveReady(w http.ResponseWriter, _ *http.Request) {
	ok, reason := m.readiness()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: "+reason)
		return
	}
	fmt.Fprintln(w, "ready: "+reason)
}

// waitDrainDelay is the start of a graceful stop with --drain-delay: /ready already says
// 503, and everything keeps serving for the delay, so that a front's health check takes
// this host out of rotation before its routers stop accepting. Kill (a second stop
// signal) cuts it short.
func (m *Master) waitDrainDelay() {
	d := m.config().DrainDelay
	if d <= 0 {
		return
	}
	m.logger.Info("stopping: /ready answers 503; serving on until the drain delay has passed", "drain_delay", d.String())
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-m.killed:
	}
}

// serving reports whether the worker has an app serving: its router reported it ready and
// has not since reported a crash (backoff) or gone away (read clears it). A new app
// starting for a rolling restart does not count against it: the old one serves meanwhile.
func (w *worker) serving() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.up
}

// noteStateLocked updates up from a state report: ready sets it, backoff (a crash) clears
// it, starting leaves it alone. w.mu must be held.
func (w *worker) noteStateLocked(s descend.WorkerState) {
	switch s {
	case descend.StateReady:
		w.up = true
	case descend.StateBackoff, descend.StateStopped:
		w.up = false
	}
}
