package process

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"

	"github.com/olio-dev/olio/descend"
)

// acceptor is a router's public side, one component with its own lifecycle. While the
// router is a member, it accepts on the shared listening socket and takes the connections
// peers hand off to it (handoff), and serves both, through framingListener, with one
// http.Server at a time: a publicServer, one spell of accepting. start begins that life,
// update follows the membership, drain stops accepting for good and waits for the requests
// of every spell, stop closes the handoff's sockets.
type acceptor struct {
	listener *os.File               // the shared public listening socket
	server   func() *http.Server    // a spell's server (newPublicServer)
	conf     func() *descend.Config // MaxConns and ShutdownTimeout, as they are at a spell's start and end
	logger   *slog.Logger
	handoff  *handoff       // receives into the current spell's queue; sends for tryHandOff
	member   func() bool    // whether the router owns keys: it accepts only then
	mu       sync.Mutex     // guards what follows
	public   *publicServer  // non-nil while accepting
	queue    *connQueue     // the current spell's handed-off connections
	retiring sync.WaitGroup // spells stopping
	draining bool           // told to stop accepting for good
}

// start begins accepting, before the app is ready and whether or not it ever is, when
// member says the router owns keys: a request for its keys waits up to --forward-timeout
// for the app, then gets 503, instead of sitting unanswered in the kernel's backlog.
func (a *acceptor) start(member func() bool) {
	a.member = member
	a.update()
}

// update starts or stops accepting: the side accepts while the router is a member and has
// not been told to drain.
func (a *acceptor) update() {
	a.mu.Lock()
	defer a.mu.Unlock()
	want := !a.draining && a.member()
	switch {
	case want && a.public == nil:
		ln, err := net.FileListener(a.listener)
		if err != nil {
			a.logger.Error("public listener", "err", err)
			return
		}
		srv := a.server()
		srv.ConnContext = connContext
		a.queue = newConnQueue()
		a.public = startPublic(srv, limitConns(ln, a.conf().MaxConns), a.queue)
		if err := a.handoff.open(a.queue); err != nil {
			a.logger.Warn("handoff disabled", "err", err)
		}
	case !want && a.public != nil:
		a.handoff.close()
		p := a.public
		a.public, a.queue = nil, nil
		// drain waits for this one too, so that the router does not exit with requests of
		// it in flight.
		a.retiring.Add(1)
		go func() {
			defer a.retiring.Done()
			ctx, cancel := context.WithTimeout(context.Background(), a.conf().ShutdownTimeout)
			defer cancel()
			p.stop(ctx)
		}()
	}
}

// refuse stops the side from accepting again, whatever the membership says: the first
// step of a drain, taken as soon as the master asks for it.
func (a *acceptor) refuse() {
	a.mu.Lock()
	a.draining = true
	a.mu.Unlock()
}

// drain stops accepting for good and waits, up to ctx, until the requests of every spell
// have been answered; a drain at the same time waits for the same.
func (a *acceptor) drain(ctx context.Context) {
	a.mu.Lock()
	a.draining = true
	p := a.public
	a.public, a.queue = nil, nil
	if p != nil {
		a.retiring.Add(1)
	}
	a.mu.Unlock()
	a.handoff.close()
	if p != nil {
		p.stop(ctx)
		a.retiring.Done()
	}
	a.retiring.Wait() // bounded by the shutdown timeout
}

// stop closes the handoff's sockets, after drain.
func (a *acceptor) stop() { a.handoff.shutdown() }

// holdQueue returns the current spell's queue, for a handler to put back a connection it
// fails to hand off, with the handler counted in its users (the caller calls
// q.users.Done); nil while not accepting.
func (a *acceptor) holdQueue() *connQueue {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.queue != nil {
		a.queue.users.Add(1)
	}
	return a.queue
}

// connQueue is a net.Listener fed with handed-off connections, served by the public
// http.Server next to the shared socket.
type connQueue struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
	// users counts this router's handlers that may push back a connection they failed to
	// hand off; the public server waits for them before closing the queue.
	users sync.WaitGroup
}

func newConnQueue() *connQueue {
	return &connQueue{ch: make(chan net.Conn, 64), closed: make(chan struct{})}
}

// Accept returns the next queued connection; once the queue is closed, it still returns the
// ones queued before, then net.ErrClosed.
func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.closed:
		select {
		case c := <-q.ch:
			return c, nil
		default:
			return nil, net.ErrClosed
		}
	}
}

// push queues c; false if the queue is closed.
func (q *connQueue) push(c net.Conn) bool {
	select {
	case <-q.closed:
		return false
	default:
	}
	select {
	case q.ch <- c:
		return true
	case <-q.closed:
		return false
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return &net.UnixAddr{Name: "handoff", Net: "unix"} }
