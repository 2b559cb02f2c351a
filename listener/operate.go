package listener

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
)

// ops are the operator's ways in that live as long as Run: the control socket, the
// metrics server and the pidfile.
type ops struct {
	control *controlServer

	mu          sync.Mutex
	metrics     *metricsServer
	pidfile     *PIDFile
	pidfilePath string        // written by ready, for the new master of a hot upgrade
	closed      chan struct{} // closed by close: a metrics bind still waiting gives up
}

// startOps starts what the config asks for; stop is what a control `stop` calls. On error
// whatever was started is stopped again, and nothing has been announced: the log says
// "control socket" and "serving metrics" only once all of them are up. The new master of
// a hot upgrade leaves the control socket and the pidfile to its parent until it is ready
// (see ready), so a failed upgrade leaves them pointing at the master that goes on serving.
func (m *Master) startOps(stop func()) (*ops, error) {
	cfg := m.config()
	o := &ops{closed: make(chan struct{})}
	fail := func(err error) (*ops, error) {
		o.close()
		return nil, err
	}
	writePID := cfg.PIDFile != "" && !m.upgrading()
	stale := 0
	if writePID {
		var err error
		if stale, err = checkPIDFile(cfg.PIDFile, m.exe); err != nil {
			return nil, err
		}
	}
	var err error
	waitMetrics := false
	if cfg.Metrics != "" {
		if o.metrics, err = m.serveMetrics(cfg.Metrics); err != nil {
			if !m.upgrading() || !errors.Is(err, syscall.EADDRINUSE) {
				return fail(err)
			}
			// The old master of a hot upgrade still serves metrics there: it lets go of
			// the address once this master is ready (closeMetrics); bind it then.
			waitMetrics = true
		}
	}
	if cfg.Control != "" {
		if o.control, err = m.listenControl(cfg.Control, stop); err != nil {
			return fail(err)
		}
	}
	if writePID {
		if o.pidfile, err = WritePIDFile(cfg.PIDFile, os.Getpid()); err != nil {
			return fail(err)
		}
	} else if cfg.PIDFile != "" {
		o.pidfilePath = cfg.PIDFile
	}
	if o.control != nil {
		m.logger.Info("control socket", "path", cfg.Control)
	}
	if o.metrics != nil {
		m.logger.Info("serving metrics", "addr", o.metrics.addr)
	}
	if stale != 0 {
		m.logger.Info("replaced a stale pidfile", "path", cfg.PIDFile, "old_pid", stale)
	}
	if waitMetrics {
		go m.bindMetricsLater(o, cfg.Metrics)
	}
	m.ops = o
	return o, nil
}

// bindMetricsLater binds the metrics address once the old master of a hot upgrade has let
// go of it, retrying until then (or until the old master's shutdown should long be over).
func (m *Master) bindMetricsLater(o *ops, addr string) {
	deadline := time.Now().Add(m.config().ReadyTimeout + m.config().ShutdownTimeout + time.Minute)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-o.closed:
			return
		case <-t.C:
		}
		s, err := m.serveMetrics(addr)
		if err == nil {
			o.mu.Lock()
			select {
			case <-o.closed:
				o.mu.Unlock()
				s.close()
				return
			default:
			}
			o.metrics = s
			o.mu.Unlock()
			m.logger.Info("serving metrics", "addr", s.addr)
			return
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			m.logger.Error("metrics not served", "err", err)
			return
		}
	}
}

// closeMetrics stops the metrics server early: an old master that has handed over to a
// new one frees the address for it while its own routers drain.
func (o *ops) closeMetrics() {
	o.mu.Lock()
	s := o.metrics
	o.metrics = nil
	o.mu.Unlock()
	if s != nil {
		s.close()
	}
}

// upgrading reports whether this master was started by a hot upgrade and has not yet
// taken over.
func (m *Master) upgrading() bool { return m.opts.UpgradeReady != nil }

// opsReady is called once every worker is ready: the new master of a hot upgrade moves
// its control socket in and writes the pidfile.
func (m *Master) opsReady() {
	o := m.ops
	if o == nil {
		return
	}
	if o.control != nil {
		o.control.takeOver(m.logger)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.pidfilePath != "" {
		p, err := WritePIDFile(o.pidfilePath, os.Getpid())
		if err != nil {
			m.logger.Error("upgrade: cannot write the pidfile", "err", err)
		}
		o.pidfile, o.pidfilePath = p, ""
	}
}

// close stops everything startOps started and waits for it.
func (o *ops) close() {
	if o.control != nil {
		o.control.close()
	}
	o.mu.Lock()
	select {
	case <-o.closed:
	default:
		close(o.closed)
	}
	o.mu.Unlock()
	o.closeMetrics()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.pidfile != nil {
		o.pidfile.Remove()
		o.pidfile = nil
	}
}
