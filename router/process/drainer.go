package process

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Stopping an http.Server without losing a request.
//
// http.Server.Shutdown is not enough: once it has begun, net/http closes without an answer
// every connection whose request it reads from then on (conn.serve returns as soon as it sees
// the server shutting down). A router stops accepting while clients keep connecting (scaling
// down, WINCH, stop), so a client whose connection the router accepted a moment before would
// get an EOF instead of an answer; so would a client of the master's stand-by server when
// the first worker comes back. Instead, the server's owner closes its listeners, and
// Drainer.Wait answers every request from then on with "Connection: close" (so busy
// connections close after their answer, and so do idle ones that send another request),
// closes the connections that stay idle for idleGrace, and waits until every connection is
// gone.
//
// Idle connections are not closed at once (as SetKeepAlivesEnabled(false) would): a client
// may have sent its next request on one a moment before, and net/http still counts a
// connection idle while it reads a request's first bytes, so closing it loses that
// request. A client that keeps sending gets its answers and "close"; one that has gone
// quiet for idleGrace is closed as any idle timeout would.

// silentGrace is how long a drain waits for a connection that has sent nothing since it was
// accepted before closing it (net/http's Shutdown waits 5s for those).
const silentGrace = time.Second

// idleGrace is how long a drain leaves a keep-alive connection that is idle (between
// requests) before closing it.
const idleGrace = 250 * time.Millisecond

// Drainer tracks an http.Server's connections so that it can be stopped without dropping a
// request (see Wait).
type Drainer struct {
	srv      *http.Server
	draining atomic.Bool // set by Wait: answers carry "Connection: close"

	mu    sync.Mutex
	conns map[net.Conn]trackedConn
	since time.Time // when the drain began
}

type trackedConn struct {
	state http.ConnState
	since time.Time
}

// NewDrainer tracks srv's connections: it wraps srv.Handler and srv.ConnState (which it
// still calls), so call it before srv serves.
func NewDrainer(srv *http.Server) *Drainer {
	d := &Drainer{srv: srv, conns: map[net.Conn]trackedConn{}}
	h := srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if d.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, req)
	})
	hook := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		d.track(c, st)
		if hook != nil {
			hook(c, st)
		}
	}
	return d
}

func (d *Drainer) track(c net.Conn, st http.ConnState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch st {
	case http.StateHijacked, http.StateClosed:
		delete(d.conns, c)
	default:
		d.conns[c] = trackedConn{state: st, since: time.Now()}
	}
}

// Wait drains the server once its owner has closed its listeners and its Serve calls have
// returned: it waits until every connection has had its answer and is closed, closing those
// that have been silent since they were accepted for silentGrace and those idle for
// idleGrace. When ctx ends first, it closes the server, and so every connection.
func (d *Drainer) Wait(ctx context.Context) {
	d.mu.Lock()
	d.since = time.Now()
	d.mu.Unlock()
	d.draining.Store(true)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for d.left() > 0 {
		select {
		case <-ctx.Done():
			d.srv.Close()
			return
		case <-t.C:
		}
	}
}

// left closes the connections that have been silent since they were accepted for longer than
// silentGrace, and those idle for idleGrace since the drain began, and returns how many
// connections are left.
func (d *Drainer) left() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	for c, t := range d.conns {
		silent := t.state == http.StateNew && time.Since(t.since) > silentGrace
		idle := t.state == http.StateIdle && time.Since(later(t.since, d.since)) > idleGrace
		if silent || idle {
			c.Close()
			delete(d.conns, c)
		}
	}
	return len(d.conns)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
