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
//
// Like Scale, Resize and Upgrade, Reload first waits for an operation in progress to
// finish; it returns ErrStopped if a stop begins meanwhile.
func (m *Master) Reload(ctx context.Context) error {
	_, err := m.reload(ctx)
	return err
}

// reload is Reload; it also returns what the new configuration changes that a reload does
// not apply (see notApplied), whether or not the reload succeeds.
func (m *Master) reload(ctx context.Context) (notApplied []string, err error) {
	err = m.submit(ctx, "reload", func(ctx context.Context, c *cluster) error {
		var err error
		notApplied, err = c.reload(ctx)
		return err
	})
	return notApplied, err
}

// reload is Reload on the loop.
func (c *cluster) reload(ctx context.Context) (notApplied []string, err error) {
	c.notify("RELOADING=1")
	defer c.notify("READY=1")
	old := c.cfg
	old.Workers = c.members // what runs, after any scale since the last reload
	configured := c.configured
	changed := false
	running := slices.Clone(c.workers) // a worker the reload's scale adds starts on the new app
	if c.reloadConfig != nil {
		cfg, err := c.reloadConfig()
		if err == nil {
			err = cfg.Validate()
		}
		if err != nil {
			c.logger.Error("reload: keeping the running configuration", "err", err)
			return nil, err // the caller says it is a reload (olio reload: …, reload err=…)
		}
		notApplied = c.notApplied(old, cfg)
		asked := cfg.Workers
		if asked == configured {
			cfg.Workers = old.Workers // the configuration leaves the count alone: keep what runs
		}
		defer func() {
			if err == nil {
				c.configured = asked
			}
		}()
		cfg = keepRunning(old, cfg)
		changed = !sameConfig(old, cfg)
		if changed {
			c.logger.Info("reload: configuration changed", "key", cfg.Key, "workers", cfg.Workers, "app", cfg.App)
		}
		c.setConfig(cfg)
		if err := c.scale(ctx, cfg.Workers); err != nil {
			return notApplied, c.rollBack(ctx, old, nil, err)
		}
	}
	workers := slices.DeleteFunc(slices.Clone(c.workers), func(w *worker) bool { return !slices.Contains(running, w) })
	c.logger.Info("rolling restart", "workers", len(workers))
	st := newStepper(ctx, StepRestart, len(workers))
	for i, w := range workers {
		began := time.Now()
		if err := c.restart(ctx, w); err != nil {
			c.logger.Error("rolling restart stopped", "worker", w.index, "err", err)
			err = fmt.Errorf("rolling restart: %w", err)
			if !changed {
				return notApplied, err
			}
			return notApplied, c.rollBack(ctx, old, workers[:i], err)
		}
		c.logger.Info("worker restarted", "worker", w.index, "app_pid", w.lastState().AppPID)
		st.did(w.index, w.lastState().AppPID, began)
	}
	c.logger.Info("rolling restart done")
	return notApplied, nil
}

// setConfig makes cfg the running configuration and sends it to every router: it is used
// for new requests at once and for the app from its next start.
func (c *cluster) setConfig(cfg Config) {
	c.cfg = cfg
	c.publish()
	for _, w := range c.workers {
		if err := w.send(c.routerConfig(cfg, w.index)); err != nil {
			c.logger.Warn("reload: send config", "worker", w.index, "err", err)
		}
	}
}

// rollBack makes old the running configuration again after a reload failed with cause:
// the routers get it back, the worker count follows, and the workers in restarted — those
// already running the new configuration's app — are restarted onto the old one if the
// reload changed how apps start.
func (c *cluster) rollBack(ctx context.Context, old Config, restarted []*worker, cause error) error {
	if c.life.Err() != nil {
		c.logger.Warn("reload interrupted: olio is stopping", "err", cause)
		return fmt.Errorf("%w: the reload was interrupted: %w", ErrStopped, cause)
	}
	c.logger.Error("reload failed; going back to the previous configuration",
		"err", cause, "workers", old.Workers, "app", old.App)
	tried := c.cfg
	c.setConfig(old)
	var errs []string
	if err := c.scale(ctx, old.Workers); err != nil {
		errs = append(errs, fmt.Sprintf("restore %d workers: %v", old.Workers, err))
	}
	if appChanged(old, tried) {
		current := c.workers
		st := newStepper(ctx, StepRollBack, len(restarted))
		for _, w := range restarted {
			if !slices.Contains(current, w) {
				continue // removed by the scale back
			}
			began := time.Now()
			if err := c.restart(ctx, w); err != nil {
				errs = append(errs, fmt.Sprintf("restart worker %d onto the previous app: %v", w.index, err))
				continue
			}
			c.logger.Info("worker back on the previous app", "worker", w.index, "app_pid", w.lastState().AppPID)
			st.did(w.index, w.lastState().AppPID, began)
		}
	}
	if len(errs) > 0 {
		why := strings.Join(errs, "; ")
		c.logger.Error("going back to the previous configuration failed too", "err", why)
		return fmt.Errorf("reload failed: %w; going back to the previous configuration failed too: %s; see `olio status`", cause, why)
	}
	c.logger.Warn("reload failed; the previous configuration is back in place", "workers", old.Workers, "app", old.App)
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
