package listener

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"slices"

	"github.com/olio-dev/olio/descend"
)

// Reload re-reads the configuration (through Options.Reload), applies what changed, then
// restarts every app, worker by worker: each router starts a new app, waits until it is
// ready, moves its traffic to it and drains the old one. A bad config is reported and the
// running one kept. A new app that fails to become ready stops the roll; the old app of
// that worker keeps serving.
func (m *Master) Reload(ctx context.Context) error {
	m.op.Lock()
	defer m.op.Unlock()
	m.notify("RELOADING=1")
	defer m.notify("READY=1")
	if m.opts.Reload != nil {
		cfg, err := m.opts.Reload()
		if err == nil {
			err = cfg.Validate()
		}
		if err != nil {
			m.logger.Error("reload: keeping the running configuration", "err", err)
			return fmt.Errorf("reload: %w", err)
		}
		if err := m.apply(ctx, cfg); err != nil {
			return err
		}
	}
	m.mu.Lock()
	workers := append([]*worker(nil), m.workers...)
	m.mu.Unlock()
	m.logger.Info("rolling restart", "workers", len(workers))
	for _, w := range workers {
		if _, err := w.call(ctx, &descend.Restart{ID: m.nextID()}); err != nil {
			m.logger.Error("rolling restart stopped", "worker", w.index, "err", err)
			return fmt.Errorf("rolling restart: %w", err)
		}
		m.logger.Info("worker restarted", "worker", w.index, "app_pid", w.lastState().AppPID)
	}
	m.logger.Info("rolling restart done")
	return nil
}

// apply makes cfg the running configuration: routers get the new config (used for new
// requests at once and for the app from its next start), and the worker count follows.
// The listen address, run directory and secret cannot change without a restart.
func (m *Master) apply(ctx context.Context, cfg Config) error {
	m.mu.Lock()
	old := m.cfg
	cfg.Listen, cfg.Secret, cfg.SecretFile, cfg.RunDir, cfg.Control = old.Listen, old.Secret, old.SecretFile, old.RunDir, old.Control
	m.cfg = cfg
	workers := append([]*worker(nil), m.workers...)
	m.mu.Unlock()
	if cfg.Key != old.Key || !slices.Equal(cfg.App, old.App) || cfg.Workers != old.Workers {
		m.logger.Info("reload: configuration changed", "key", cfg.Key, "workers", cfg.Workers, "app", cfg.App)
	}
	for _, w := range workers {
		if err := w.send(m.routerConfig(w.index)); err != nil {
			m.logger.Warn("reload: send config", "worker", w.index, "err", err)
		}
	}
	return m.scaleLocked(ctx, cfg.Workers)
}

// errorLog adapts the logger for net/http.
func (m *Master) errorLog() *log.Logger {
	return slog.NewLogLogger(m.logger.Handler(), slog.LevelWarn)
}
