package router

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Stopping the public side without losing a request.
//
// http.Server.Shutdown is not enough: once it has begun, net/http closes without an answer
// every connection whose request it reads from then on (conn.serve returns as soon as it sees
// the server shutting down). A router stops accepting while clients keep connecting (scaling
// down, WINCH, stop), so a client whose connection the router accepted a moment before would
// get an EOF instead of an answer. Instead, publicServer.stop closes the listeners, answers
// every request from then on with "Connection: close" (so busy connections close after
// their answer, and so do idle ones that send another request), closes the connections
// that stay idle for idleGrace, and waits until every connection is gone.
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

// publicServer is one spell of accepting on the public side: an http.Server on the shared
// listener and on the queue of handed-off connections, with its connections tracked.
type publicServer struct {
	srv   *http.Server
	ln    net.Listener
	queue *connQueue
	serve sync.WaitGroup // the Serve goroutines

	draining atomic.Bool // set by stop: answers carry "Connection: close"

	mu    sync.Mutex
	conns map[net.Conn]trackedConn
	since time.Time // when the drain began
}

type trackedConn struct {
	state http.ConnState
	since time.Time
}

// startPublic serves srv on ln and on queue until stop.
func startPublic(srv *http.Server, ln net.Listener, queue *connQueue) *publicServer {
	p := &publicServer{srv: srv, ln: ln, queue: queue, conns: map[net.Conn]trackedConn{}}
	h := srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if p.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, req)
	})
	hook := srv.ConnState
	srv.ConnState = func(c net.Conn, st http.ConnState) {
		p.track(c, st)
		if hook != nil {
			hook(c, st)
		}
	}
	p.serve.Add(2)
	go func() { defer p.serve.Done(); srv.Serve(framingListener{ln}) }()
	go func() { defer p.serve.Done(); srv.Serve(framingListener{queue}) }()
	return p
}

func (p *publicServer) track(c net.Conn, st http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch st {
	case http.StateHijacked, http.StateClosed:
		delete(p.conns, c)
	default:
		p.conns[c] = trackedConn{state: st, since: time.Now()}
	}
}

// left closes the connections that have been silent since they were accepted for longer than
// silentGrace, and those idle for idleGrace since the drain began, and returns how many
// connections are left.
func (p *publicServer) left() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c, t := range p.conns {
		silent := t.state == http.StateNew && time.Since(t.since) > silentGrace
		idle := t.state == http.StateIdle && time.Since(later(t.since, p.since)) > idleGrace
		if silent || idle {
			c.Close()
			delete(p.conns, c)
		}
	}
	return len(p.conns)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// stop stops accepting and waits until every connection has had its answer and is closed;
// when ctx ends first, it closes them all.
func (p *publicServer) stop(ctx context.Context) {
	p.ln.Close()
	p.queue.users.Wait() // handlers that may put a connection back into the queue
	p.queue.Close()      // Serve still takes what is queued, then returns
	p.serve.Wait()       // no connection is accepted, nor tracked, after this
	for drained := false; !drained; {
		select {
		case c := <-p.queue.ch: // queued after Serve returned (cannot happen): nobody will serve it
			c.Close()
		default:
			drained = true
		}
	}
	p.mu.Lock()
	p.since = time.Now()
	p.mu.Unlock()
	p.draining.Store(true)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for p.left() > 0 {
		select {
		case <-ctx.Done():
			p.srv.Close()
			return
		case <-t.C:
		}
	}
}
