package listener

import (
	"context"
	"errors"

	"github.com/olio-dev/olio/descend"
)

// ReopenAccessLogs asks every router to reopen its access log file (USR1, after logrotate
// renamed it), and waits for each to have done so. Routers write the access log
// themselves; the master never sees a request.
func (m *Master) ReopenAccessLogs(ctx context.Context) error {
	if m.config().AccessLog == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, StatsTimeout)
	defer cancel()
	errs := callAll(ctx, m.snapshot().workers, func(int) descend.Request { return &descend.Reopen{ID: m.nextID()} })
	if err := errors.Join(errs...); err != nil {
		return err
	}
	m.logger.Info("access logs reopened", "path", m.config().AccessLog)
	return nil
}
