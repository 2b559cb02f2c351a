package process

import (
	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router/internal/accesslog"
)

// The access log (--access-log) is package accesslog; what follows ties it to the router:
// the route names, opening and closing the log as the config says, the master's Reopen.

// Routes, as the access log names them.
const (
	RouteLocal     = "local"      // the accepting router owns the key (or there is none)
	RouteForwarded = "forwarded"  // sent to the owner over a mux stream
	RouteHandedOff = "handed-off" // served on a connection another router handed to its owner
	RouteFanout    = "fan-out"    // X-Olio-Index: * (every worker)
	RouteDirect    = "direct"     // X-Olio-Index: i with the secret
)

// FDStdout is the descriptor on which a router (or an embedded worker) gets the master's
// stdout when the access log is "-".
const FDStdout = accesslog.FDStdout

// AccessLine is the JSON form of one access log line (--log-format json).
type AccessLine = accesslog.Line

// setAccessLog opens, swaps or closes the access log to match the config.
func (r *Router) setAccessLog(cfg *descend.Config) error {
	r.alogMu.Lock()
	defer r.alogMu.Unlock()
	old := r.alog.Load()
	format := cfg.AccessLogFormat
	if format == "" {
		format = "text"
	}
	if old != nil && old.Path() == cfg.AccessLog && old.Format() == format {
		return nil
	}
	var l *accesslog.Log
	if cfg.AccessLog != "" {
		var err error
		if l, err = accesslog.Open(cfg.AccessLog, format, &r.counters.accessDropped, r.logger); err != nil {
			return err
		}
	}
	r.alog.Store(l)
	if old != nil {
		old.Close() // requests that took it before the swap may still add: dropped unless queued
	}
	return nil
}

// closeAccessLog writes the last entries and closes the log.
func (r *Router) closeAccessLog() {
	r.alogMu.Lock()
	defer r.alogMu.Unlock()
	if l := r.alog.Swap(nil); l != nil {
		l.Close()
	}
}

func (r *Router) onReopen(m descend.Message) error {
	res := &descend.Result{ID: m.(*descend.Reopen).ID}
	r.alogMu.Lock()
	l := r.alog.Load()
	r.alogMu.Unlock()
	if l != nil {
		if err := l.Reopen(); err != nil {
			res.Error = err.Error()
		}
	}
	return r.ctl.Send(res)
}
