// Package router is what a Go service imports to be its own olio worker: the embedded mode,
// where the service's process is the router, as olio.js's workers ran the olio library
// in-process.
//
//	func main() {
//		log.Fatal(router.Serve(handler))
//	}
//
// Started by `olio serve --embedded -- ./service`, each worker process routes requests by
// key to the worker that owns them and calls handler for its own keys; started any other
// way, the same binary serves handler on 127.0.0.1:$PORT (or $OLIO_LISTEN), so it runs
// alike in development, in tests and behind another balancer.
//
// Everything else of a worker — the route decision, the peer protocol, the app leg, the
// access log — is in package [github.com/olio-dev/olio/router/process], which the master
// and the olio command use; a service does not need it.
package router

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"

	"github.com/olio-dev/olio/router/keys"
	"github.com/olio-dev/olio/router/process"
)

// The request header fields olio reads. HeaderIndex together with HeaderSecret (the value
// of $OLIO_SECRET) sends a request to the worker HeaderIndex names, whatever its key; olio
// strips both before a handler sees the request.
const (
	HeaderKey    = "X-Olio-Key" // the key, with the default --key header:X-Olio-Key
	HeaderIndex  = process.HeaderIndex
	HeaderSecret = process.HeaderSecret
)

// Handover tells a worker that keys are about to leave its process, so it can save or hand
// over their state (see Server.OnHandover).
type Handover = process.Handover

// Server runs a handler as an olio worker. Only Handler is required: the zero value of
// every other field means the default, as with http.Server.
type Server struct {
	// Handler serves the requests this worker owns. Required.
	Handler http.Handler

	// Logger receives the worker's log. nil: text on stderr (JSON when the master runs
	// with --log-format json).
	Logger *slog.Logger

	// OnHandover, if not nil, is called before keys leave this worker (a scale, or a
	// rolling restart of this worker), while their requests are held: the change waits
	// until it returns, up to --forward-timeout (ctx says how long is left). An error is
	// logged and the change goes on.
	OnHandover func(ctx context.Context, h Handover) error

	// OnShutdown, if not nil, is called once when the worker begins a graceful stop, as
	// http.Server.RegisterOnShutdown's functions are: a handler that keeps hijacked
	// connections (WebSocket) open should close them then.
	OnShutdown func()

	// Addr is where the service listens when it runs on its own (not started by olio
	// serve --embedded). "": $OLIO_LISTEN if set, else 127.0.0.1:$PORT, else
	// 127.0.0.1:8080. Under olio the master's listener is used and Addr is ignored.
	Addr string
}

// Serve runs this process as an olio worker whose requests h serves, and blocks until it
// stops; it returns nil after a graceful stop (TERM). It is (&Server{Handler: h}).Serve().
//
// A panic in h answers 500 to that request (or cuts its connection when the answer had
// begun) and is logged with its stack; the worker goes on.
func Serve(h http.Handler) error { return (&Server{Handler: h}).Serve() }

// Serve runs s as an olio worker (see the package function Serve).
func (s *Server) Serve() error {
	return process.ServeEmbedded(s.Handler, process.Embed{
		Logger: s.Logger,
		Addr:   s.Addr,
		OnHandover: func(ctx context.Context, h Handover) error {
			var errs []error
			for _, f := range s.handoverHooks() {
				errs = append(errs, f(ctx, h))
			}
			return errors.Join(errs...)
		},
		OnShutdown: func() {
			for _, f := range s.shutdownHooks() {
				go f()
			}
		},
	})
}

// handoverHooks are s.OnHandover and those the deprecated OnHandover was given.
func (s *Server) handoverHooks() []func(context.Context, Handover) error {
	hooks.mu.Lock()
	fns := slices.Clone(hooks.handover)
	hooks.mu.Unlock()
	if s.OnHandover != nil {
		fns = append(fns, s.OnHandover)
	}
	return fns
}

// shutdownHooks are s.OnShutdown and those the deprecated RegisterOnShutdown was given.
func (s *Server) shutdownHooks() []func() {
	hooks.mu.Lock()
	fns := slices.Clone(hooks.shutdown)
	hooks.mu.Unlock()
	if s.OnShutdown != nil {
		fns = append(fns, s.OnShutdown)
	}
	return fns
}

// Index returns this worker's index (0 to Workers()-1): $OLIO_INDEX, which olio sets;
// 0 when the program runs on its own.
func Index() int { return process.EmbeddedIndex() }

// Workers returns the number of workers that own keys right now: it follows scaling
// (olio scale, TTIN, TTOU) without a restart. 1 when the program runs on its own, 0 while
// a worker's membership is not known yet.
func Workers() int { return process.EmbeddedWorkers() }

// Owner returns the index of the worker that owns key among workers workers: jump
// consistent hash of the key's xxhash64, as every olio router computes it. Owner(key,
// Workers()) is the owner now.
func Owner(key string, workers int) int { return keys.Owner(key, workers) }

// hooks are the functions the deprecated OnHandover and RegisterOnShutdown were given.
var hooks struct {
	mu       sync.Mutex
	handover []func(context.Context, Handover) error
	shutdown []func()
}

// OnHandover registers f to be called before keys leave this worker, as
// Server.OnHandover.
//
// Deprecated: set Server.OnHandover.
func OnHandover(f func(ctx context.Context, h Handover) error) {
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	hooks.handover = append(hooks.handover, f)
}

// RegisterOnShutdown registers f to be called once when the worker begins a graceful
// stop, as Server.OnShutdown.
//
// Deprecated: set Server.OnShutdown.
func RegisterOnShutdown(f func()) {
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	hooks.shutdown = append(hooks.shutdown, f)
}
