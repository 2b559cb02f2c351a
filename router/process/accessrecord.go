package process

import (
	"context"
	"net/http"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router/internal/accesslog"
	"github.com/olio-dev/olio/router/internal/hotkeys"
)

// What one request records for the access log: the route and worker the handler chose, the
// key as --key-stats shows it, the status and bytes of the answer, and the app's share of
// its time. Nothing is recorded while the log is off.

// headerTiming is between routers only: a client's is never passed on (the peer protocol's
// header filter drops it). A forwarded request asks its owner for its app's time by the
// request head's peerTimed flag, and the owner answers in accesslog.HeaderAppTime.
const headerTiming = "X-Olio-Timing"

// timedKey marks, in a forwarded request's context, that the owner should send its app's
// time back.
type timedKey struct{}

// accessLogging is the log state of one request on the public side: its entry, built here
// as the handler decides, and the writer that sees its answer.
type accessLogging struct {
	w      accesslog.Writer
	e      accesslog.Entry
	router *Router
	log    *accesslog.Log
	skip   bool // handed off: the owner writes the line
}

// beginAccess starts the entry of a public request when the access log is on; nil when it
// is off.
func (r *Router) beginAccess(w http.ResponseWriter, req *http.Request) *accessLogging {
	l := r.alog.Load()
	if l == nil {
		return nil
	}
	a := &accessLogging{router: r, log: l}
	a.w.ResponseWriter = w
	a.e = accesslog.Entry{
		Start: time.Now(), Client: req.RemoteAddr, Method: req.Method, URI: req.RequestURI,
		Proto: req.Proto, Worker: r.index, Route: RouteLocal, App: -1,
	}
	accesslog.CountBody(req, &a.e.In)
	if info, _ := req.Context().Value(connInfoKey{}).(*connInfo); info != nil && info.received {
		a.e.Route = RouteHandedOff
	}
	return a
}

// setKey records the request's key as --key-stats shows it: as is (on), as its digest
// (hashed), or not at all (off).
func (a *accessLogging) setKey(h uint64, key string) {
	if a == nil {
		return
	}
	set := a.router.settings()
	switch set.cfg.KeyStats {
	case descend.KeyStatsOn:
		a.e.Key, a.e.HasKey = key, true
	case descend.KeyStatsHashed:
		a.e.Key, a.e.HasKey = hotkeys.KeyDigest(set.secret, h), true
	}
}

// route records where the request went.
func (a *accessLogging) route(route string, worker int) {
	if a != nil {
		a.e.Route, a.e.Worker = route, worker
	}
}

// forward marks the request as forwarded to its owner: ctx then asks the owner for its
// app's time.
func (a *accessLogging) forward(ctx context.Context) context.Context {
	if a == nil {
		return ctx
	}
	a.w.Remote = true
	return context.WithValue(ctx, timedKey{}, true)
}

// end queues the entry. Deferred by ServeHTTP: it runs also when the proxy panics with
// http.ErrAbortHandler (the client went away mid-answer).
func (a *accessLogging) end() {
	if a == nil || a.skip {
		return
	}
	a.w.Finish(&a.e)
	a.log.Add(&a.e)
}
