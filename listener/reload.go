package listener

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Reload re-reads the configuration (through Options.Reload), applies what changed, then
// restarts every app, worker by worker: each router starts a new app, waits until it is
// ready, moves its traffic to it and drains the old one. A bad config is reported and the
// running one kept.
//
// A reload that fails part way — a new app that does not become ready, new workers that
// do not — goes back to the configuration that ran before: the routers get it back, the
// worker count is restored, and the workers already restarted onto the new app are
// restarted onto the old one (the worker whose new app failed kept its old one). The
// error then wraps ErrRolledBack. A roll without a configuration change that fails stops
// where it failed; the workers after that one keep their apps.
func (m *Master) Reload(ctx context.Context) error {
	_, err := m.reload(ctx)
	return err
}

// reload is Reload; it also returns what the new configuration changes that a reload does
// not apply (see notApplied), whether or not the reload succeeds.
func (m *Master) reload(ctx context.Context) (notApplied []string, err error) {
	ctx, end, err := m.beginOp(ctx)
	defer end()
	if err != nil {
		return nil, err
	}
	m.notify("RELOADING=1")
	defer m.notify("READY=1")
	m.mu.Lock()
	old := m.cfg
	old.Workers = m.members // what runs, after any scale since the last reload
	configured := m.configured
	m.mu.Unlock()
	changed := false
	if m.opts.Reload != nil {
		cfg, err := m.opts.Reload()
		if err == nil {
			err = cfg.Validate()
		}
		if err != nil {
			m.logger.Error("reload: keeping the running configuration", "err", err)
			return nil, err // the caller says it is a reload (olio reload: …, reload err=…)
		}
		notApplied = m.notApplied(old, cfg)
		asked := cfg.Workers
		if asked == configured {
			cfg.Workers = old.Workers // the configuration leaves the count alone: keep what runs
		}
		defer func() {
			if err == nil {
				m.mu.Lock()
				m.configured = asked
				m.mu.Unlock()
			}
		}()
		cfg = keepRunning(old, cfg)
		changed = !sameConfig(old, cfg)
		if changed {
			m.logger.Info("reload: configuration changed", "key", cfg.Key, "workers", cfg.Workers, "app", cfg.App)
		}
		m.setConfig(cfg)
		if err := m.scaleLocked(ctx, cfg.Workers); err != nil {
			return notApplied, m.rollBack(ctx, old, nil, err)
		}
	}
	m.mu.Lock()
	workers := append([]*worker(nil), m.workers...)
	m.mu.Unlock()
	m.logger.Info("rolling restart", "workers", len(workers))
	st := newStepper(ctx, StepRestart, len(workers))
	for i, w := range workers {
		began := time.Now()
		if err := w.restart(ctx); err != nil {
			m.logger.Error("rolling restart stopped", "worker", w.index, "err", err)
			err = fmt.Errorf("rolling restart: %w", err)
			if !changed {
				return notApplied, err
			}
			return notApplied, m.rollBack(ctx, old, workers[:i], err)
		}
		m.logger.Info("worker restarted", "worker", w.index, "app_pid", w.lastState().AppPID)
		st.did(w.index, w.lastState().AppPID, began)
	}
	m.logger.Info("rolling restart done")
	return notApplied, nil
}

// setConfig makes cfg the running configuration and sends it to every router: it is used
// for new requests at once and for the app from its next start.
func (m *Master) setConfig(cfg Config) {
	m.mu.Lock()
	m.cfg = cfg
	workers := append([]*worker(nil), m.workers...)
	m.mu.Unlock()
	for _, w := range workers {
		if err := w.send(m.routerConfig(w.index)); err != nil {
			m.logger.Warn("reload: send config", "worker", w.index, "err", err)
		}
	}
}

// rollBack makes old the running configuration again after a reload failed with cause:
// the routers get it back, the worker count follows, and the workers in restarted — those
// already running the new configuration's app — are restarted onto the old one if the
// reload changed how apps start. m.op must be held.
func (m *Master) rollBack(ctx context.Context, old Config, restarted []*worker, cause error) error {
	if m.life != nil && m.life.Err() != nil {
		m.logger.Warn("reload interrupted: olio is stopping", "err", cause)
		return fmt.Errorf("%w: the reload was interrupted: %w", ErrStopped, cause)
	}
	m.logger.Error("reload failed; going back to the previous configuration",
		"err", cause, "workers", old.Workers, "app", old.App)
	tried := m.config()
	m.setConfig(old)
	var errs []string
	if err := m.scaleLocked(ctx, old.Workers); err != nil {
		errs = append(errs, fmt.Sprintf("restore %d workers: %v", old.Workers, err))
	}
	if appChanged(old, tried) {
		m.mu.Lock()
		current := append([]*worker(nil), m.workers...)
		m.mu.Unlock()
		st := newStepper(ctx, StepRollBack, len(restarted))
		for _, w := range restarted {
			if !slices.Contains(current, w) {
				continue // removed by the scale back
			}
			began := time.Now()
			if err := w.restart(ctx); err != nil {
				errs = append(errs, fmt.Sprintf("restart worker %d onto the previous app: %v", w.index, err))
				continue
			}
			m.logger.Info("worker back on the previous app", "worker", w.index, "app_pid", w.lastState().AppPID)
			st.did(w.index, w.lastState().AppPID, began)
		}
	}
	if len(errs) > 0 {
		why := strings.Join(errs, "; ")
		m.logger.Error("going back to the previous configuration failed too", "err", why)
		return fmt.Errorf("reload failed: %w; going back to the previous configuration failed too: %s; see `olio status`", cause, why)
	}
	m.logger.Warn("reload failed; the previous configuration is back in place", "workers", old.Workers, "app", old.App)
	return fmt.Errorf("%w (%d workers, %s): %w; fix the config file and reload again", ErrRolledBack, old.Workers, appDesc(old), cause)
}

// keepRunning returns cfg with the settings a reload cannot change set to old's (those
// Kept in Settings: the sockets, the secret, the pidfile, made once at start, and whether
// the routers are the apps), and the run directory.
func keepRunning(old, cfg Config) Config {
	for i := range Settings {
		if s := &Settings[i]; s.Reload == KeptForRestart || s.Reload == KeptForUpgrade {
			reflect.ValueOf(s.Field(&cfg)).Elem().Set(reflect.ValueOf(s.Value(&old)))
		}
	}
	cfg.RunDir = old.RunDir
	return cfg
}

// notApplied lists, and logs, what cfg changes that a reload leaves as it is (see
// keepRunning), or that reaches the routers only when they restart. A new secret is said
// without the secret.
func (m *Master) notApplied(old, cfg Config) []string {
	var out []string
	for i := range Settings {
		s := &Settings[i]
		needs := s.Reload.needs()
		running, configured := fmt.Sprint(s.Value(&old)), fmt.Sprint(s.Value(&cfg))
		if needs == "" || s.Secret || running == configured {
			continue
		}
		out = append(out, fmt.Sprintf("%s %q → %q needs %s", s.Name, running, configured, needs))
		m.logger.Warn("reload: setting not applied", "setting", s.Name, "running", running, "configured", configured, "needs", needs)
	}
	if cfg.Secret != "" || cfg.SecretFile != "" {
		if s, err := loadSecret(&cfg); err == nil && s != m.secret {
			needs := KeptForRestart.needs()
			out = append(out, "a new secret needs "+needs)
			m.logger.Warn("reload: setting not applied", "setting", "secret", "needs", needs)
		}
	}
	return out
}

// sameConfig reports whether a and b configure the same cluster.
func sameConfig(a, b Config) bool {
	if !slices.Equal(a.App, b.App) {
		return false
	}
	a.App, b.App, a.Sources, b.Sources = nil, nil, nil, nil
	return reflect.DeepEqual(a, b)
}

// appChanged reports whether a and b start apps differently, so that an app started
// under one is not what the other would start.
func appChanged(a, b Config) bool {
	return !slices.Equal(a.App, b.App) || a.AppDir != b.AppDir || a.ReadyMode != b.ReadyMode || a.CPUAffinity != b.CPUAffinity
}

// appDesc names the app for a log line or message: "app CMD ARGS…" or the demo.
func appDesc(c Config) string {
	if len(c.App) == 0 {
		return "the built-in demo app"
	}
	return "app " + strings.Join(c.App, " ")
}

// errorLog adapts the logger for net/http.
func (m *Master) errorLog() *log.Logger {
	return slog.NewLogLogger(m.logger.Handler(), slog.LevelWarn)
}
