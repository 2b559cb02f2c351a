package listener

import "os"

// ops are the operator's ways in that live as long as Run: the control socket, the
// metrics server and the pidfile.
type ops struct {
	control *controlServer
	metrics *metricsServer
	pidfile *PIDFile
}

// startOps starts what the config asks for; stop is what a control `stop` calls. On error
// whatever was started is stopped again.
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
		if o.pidfile, err = WritePIDFile(cfg.PIDFile, os.Getpid()); err != nil {
			o.close()
			return nil, err
		}
	}
	return o, nil
}

// close stops everything startOps started and waits for it.
func (o *ops) close() {
	if o.control != nil {
		o.control.close()
	}
	if o.metrics != nil {
		o.metrics.close()
	}
	if o.pidfile != nil {
		o.pidfile.Remove()
	}
}
