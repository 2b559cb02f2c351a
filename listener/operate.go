package listener

import (
	"os"
	"sync"
)

// ops are the operator's ways in that live as long as Run: the control socket, the
// metrics server and the pidfile.
type ops struct {
	control *controlServer
	metrics *metricsServer

	mu          sync.Mutex
	pidfile     *PIDFile
	pidfilePath string // written by ready, for the new master of a hot upgrade
}

// startOps starts what the config asks for; stop is what a control `stop` calls. On error
// whatever was started is stopped again. The new master of a hot upgrade leaves the
// control socket and the pidfile to its parent until it is ready (see ready), so a failed
// upgrade leaves them pointing at the master that goes on serving.
func (m *Master) startOps(stop func()) (*ops, error) {
	cfg := m.config()
	o := &ops{}
	var err error
	if cfg.Control != "" {
		if o.control, err = m.listenControl(cfg.Control, stop); err != nil {
			return nil, err
		}
	}
	if cfg.Metrics != "" {
		if o.metrics, err = m.serveMetrics(cfg.Metrics); err != nil {
			o.close()
			return nil, err
		}
	}
	if cfg.PIDFile != "" {
		if m.upgrading() {
			o.pidfilePath = cfg.PIDFile
		} else if o.pidfile, err = WritePIDFile(cfg.PIDFile, os.Getpid()); err != nil {
			o.close()
			return nil, err
		}
	}
	m.ops = o
	return o, nil
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
	if o.metrics != nil {
		o.metrics.close()
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.pidfile != nil {
		o.pidfile.Remove()
		o.pidfile = nil
	}
}
