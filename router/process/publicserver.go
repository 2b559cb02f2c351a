package process

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// publicServer is one spell of accepting on the public side: an http.Server on the shared
// listener and on the queue of handed-off connections, with its connections tracked so
// that stop loses no request (see Drainer).
type publicServer struct {
	srv   *http.Server
	ln    net.Listener
	queue *connQueue
	serve sync.WaitGroup // the Serve goroutines
	drain *Drainer
}

// startPublic serves srv on ln and on queue until stop.
func startPublic(srv *http.Server, ln net.Listener, queue *connQueue) *publicServer {
	p := &publicServer{srv: srv, ln: ln, queue: queue, drain: NewDrainer(srv)}
	p.serve.Add(2)
	go func() { defer p.serve.Done(); srv.Serve(framingListener{ln}) }()
	go func() { defer p.serve.Done(); srv.Serve(framingListener{queue}) }()
	return p
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
	p.drain.Wait(ctx)
}
