package listener

import (
	"context"
	"errors"
	"fmt"
	"sync"

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
	m.mu.Lock()
	workers := append([]*worker(nil), m.workers...)
	m.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(workers))
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := w.call(ctx, &descend.Reopen{ID: m.nextID()}); err != nil && !errors.Is(err, ErrNoRouter) {
				errs[i] = fmt.Errorf("worker %d: %w", w.index, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	m.logger.Info("access logs reopened", "path", m.config().AccessLog)
	return nil
}
