package process

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"
)

// The health probe (--health-timeout), olio's take on unicorn's `timeout`: an app that
// stops answering altogether is recycled instead of failing every request sent to it.
const (
	// healthMinInterval and healthMaxInterval bound the time between two probes, which is
	// a quarter of the health timeout.
	healthMinInterval = 50 * time.Millisecond
	healthMaxInterval = 2 * time.Second
	// healthOffPoll is how often a router whose probe is off looks whether a reload has
	// turned it on.
	healthOffPoll = 2 * time.Second
	// recycleSlack bounds, beyond the ready and shutdown timeouts, the wait for a recycle's
	// replacement (the old app's drain is bounded by the supervisor's drain timeout).
	recycleSlack = 30 * time.Second
	// closedTimeout is how long an app's port may refuse connections, while the app runs,
	// before the app is recycled. This check is always on, --health-timeout or not: an app
	// that closed its listening socket answers no request (each would get 502), and a busy
	// app still has its connections accepted by the kernel, so it is never taken for one.
	closedTimeout = 5 * time.Second
)

// checkHealth probes the current app instance until ctx is done. An app that has answered
// no probe for the health timeout (refused connections, or accepted and said nothing) is
// recycled: a rolling restart puts a fresh instance in its place, and if that fails the
// silent one is killed so the supervisor starts another after its backoff. It reads the
// health timeout afresh for every probe, so a reload can change it; 0 turns it off.
func (r *Router) checkHealth(ctx context.Context) {
	var (
		watched      *instance // the instance failingSince is about
		failingSince time.Time // start of the first failed probe in a row; zero: healthy
	)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		timeout, probe, why := r.conf().HealthTimeout, probeApp, "app not answering health probes: recycling it"
		if timeout <= 0 {
			// The probe is off: only an app that no longer listens is recycled.
			timeout, probe, why = closedTimeout, probeListening, "app stopped listening on $PORT while running: recycling it"
			t.Reset(healthOffPoll)
		} else {
			t.Reset(min(max(timeout/4, healthMinInterval), healthMaxInterval))
		}
		inst := r.apps.current.Load()
		if inst != watched {
			watched, failingSince = inst, time.Time{}
		}
		if inst == nil || inst.child == nil {
			continue // starting, restarting or in backoff: the supervisor is on it
		}
		start := time.Now()
		err := probe(ctx, inst.port, timeout)
		if ctx.Err() != nil {
			return
		}
		if r.apps.current.Load() != inst {
			continue // replaced while we probed: the answer is about an old instance
		}
		if err == nil {
			failingSince = time.Time{}
			continue
		}
		if failingSince.IsZero() {
			failingSince = start
		}
		if silent := time.Since(failingSince); silent >= timeout {
			r.recycle(ctx, inst, why, silent, err)
			watched, failingSince = nil, time.Time{}
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
			t.Reset(0)
		}
	}
}

// recycle replaces the silent instance inst. It returns when the replacement is serving
// (or has failed, in which case inst has been killed).
func (r *Router) recycle(ctx context.Context, inst *instance, why string, silent time.Duration, probeErr error) {
	pid := inst.child.Pid()
	cfg := r.conf()
	r.logger.Warn(why, "app_pid", pid,
		"silent", silent.Round(time.Millisecond), "health_timeout", cfg.HealthTimeout, "err", probeErr)
	rctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout+cfg.ShutdownTimeout+recycleSlack)
	defer cancel()
	err := r.sup.Restart(rctx)
	if err == nil || ctx.Err() != nil {
		return
	}
	r.logger.Warn("replacing the silent app failed: killing it", "app_pid", pid, "err", err)
	if err := inst.child.Signal(syscall.SIGKILL); err != nil {
		r.logger.Warn("kill the silent app", "app_pid", pid, "err", err)
	}
}

// probeApp asks the app on port for any HTTP answer within timeout.
func probeApp(ctx context.Context, port int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	// Stopping the router must not wait for a probe of an app that does not answer.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(c, probeRequest(addr)); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// probeListening reports an error only when the app's port refuses a connection: nothing
// listens there.
func probeListening(ctx context.Context, port int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return err
		}
		return nil // slow or busy is not closed
	}
	return c.Close()
}

// probeRequest is what a probe sends to the app at addr: OPTIONS * asks about the server
// rather than about any resource, so it has no effect on the app (Go's net/http answers it
// without calling the app's handler). Any HTTP answer, whatever its status, counts as healthy.
func probeRequest(addr string) string {
	return "OPTIONS * HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: olio-health\r\nConnection: close\r\n\r\n"
}
