package process

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/olio-dev/olio/mux"
	"github.com/olio-dev/olio/router/internal/appleg"
	"github.com/olio-dev/olio/router/internal/connpool"
)

// bufferPool shares copy buffers between requests.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(v []byte) { b.p.Put(&v) }

var buffers = &bufferPool{}

// ctxKey keys request-scoped values.
type ctxKey int

const (
	fromPeer ctxKey = iota // the request was forwarded in: X-Forwarded-* already set
	retried                // the request was already retried once after a dial failure
)

// localError answers a failed request to the app. When the app died under the request, a
// request that never reached it (the connect failed) or that is safe to repeat (an
// idempotent method without a body, as nginx's proxy_next_upstream does) is retried once
// on its replacement; anything else is a 502, or a 504 when the request timed out.
func (r *Router) localError(w http.ResponseWriter, req *http.Request, err error, inst *instance) {
	var de *appleg.DialError
	if req.Context().Value(retried) == nil && req.Context().Err() == nil && !errors.Is(err, context.DeadlineExceeded) &&
		(errors.As(err, &de) || connpool.Replayable(req)) {
		if r.appGone(req.Context(), inst) {
			ctx := context.WithValue(req.Context(), retried, true)
			r.serveLocal(w, req.WithContext(ctx), inst)
			return
		}
	}
	if r.failBody(w, req, err) {
		return
	}
	err = timedOut(req, err) // a cancellation by the answer timeout is a 504
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		r.fail(w, http.StatusGatewayTimeout, fmt.Sprintf("olio: worker %d's app did not answer within %s", r.index, r.conf().RequestTimeout))
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
		w.WriteHeader(499)
	default:
		// The detail (addresses, syscalls) goes to the log; the client gets a plain line.
		r.logger.Warn("app failed", "path", req.URL.Path, "err", err)
		r.fail(w, http.StatusBadGateway, fmt.Sprintf("olio: worker %d's app failed to answer", r.index))
	}
}

// appGone reports whether inst's process exits soon after a failed connect, in which case
// the request can wait for its replacement.
func (r *Router) appGone(ctx context.Context, inst *instance) bool {
	if inst.child == nil {
		return false
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-inst.child.Done():
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// openPeer opens a stream to peer i, waiting up to the forward timeout for it.
func (r *Router) openPeer(ctx context.Context, i int) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, r.conf().ForwardTimeout)
	defer cancel()
	return r.pool.Open(ctx, i)
}

// ownerKey carries the owner's index from the handler to forward: its one carrier on the
// forwarding router (on the wire, the stream is the owner's).
type ownerKey struct{}

func (r *Router) remoteError(w http.ResponseWriter, req *http.Request, err error) {
	i, _ := req.Context().Value(ownerKey{}).(int)
	if r.failBody(w, req, err) {
		return
	}
	switch {
	case errors.Is(err, mux.ErrPeerUnavailable):
		w.Header().Set("Retry-After", "1")
		r.fail(w, http.StatusServiceUnavailable, fmt.Sprintf("olio: worker %d is not available (waited %s)", i, r.conf().ForwardTimeout))
	case errors.Is(err, context.DeadlineExceeded):
		r.fail(w, http.StatusGatewayTimeout, fmt.Sprintf("olio: worker %d did not answer within %s", i, r.conf().RequestTimeout))
	case errors.Is(err, context.Canceled):
		w.WriteHeader(499)
	default:
		r.logger.Warn("forwarding failed", "owner", i, "path", req.URL.Path, "err", err)
		r.fail(w, http.StatusBadGateway, fmt.Sprintf("olio: forwarding to worker %d failed", i))
	}
}

// fail writes a short plain-text error answer.
func (r *Router) fail(w http.ResponseWriter, code int, reason string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintln(w, reason)
}
