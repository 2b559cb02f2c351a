package listener

import (
	"context"
	"fmt"
	"os"
	"syscall"
)

// Signals are the signals the master handles; pass them to signal.Notify.
var Signals = []os.Signal{
	syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP,
	syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGWINCH, syscall.SIGUSR1, syscall.SIGUSR2,
}

// HandleSignals acts on signals until ctx is done: TERM, INT and QUIT call stop (a second
// one calls Kill), HUP reloads, TTIN and TTOU add and remove a worker, WINCH scales to
// zero, USR1 calls reopen and reopens the routers' access logs, USR2 upgrades. Long
// operations run on their own goroutine; one that arrives while another runs waits its
// turn (see submit).
func (m *Master) HandleSignals(ctx context.Context, sigs <-chan os.Signal, stop func(), reopen func() error) {
	stopping := false
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-sigs:
			m.logger.Info("signal", "signal", sig.String())
			switch sig {
			case syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
				if stopping {
					m.logger.Warn("second stop signal: killing every worker now")
					m.Kill()
					continue
				}
				stopping = true
				stop()
			case syscall.SIGHUP:
				go func() { m.logErr("reload", m.Reload(context.Background())) }()
			case syscall.SIGTTIN:
				go func() { m.logErr("scale up", m.Resize(context.Background(), +1)) }()
			case syscall.SIGTTOU:
				go func() { m.logErr("scale down", m.Resize(context.Background(), -1)) }()
			case syscall.SIGWINCH:
				go func() { m.logErr("scale to zero", m.Scale(context.Background(), 0)) }()
			case syscall.SIGUSR1:
				if reopen != nil {
					m.logErr("reopen log file", reopen())
				}
				go func() { m.logErr("reopen access log", m.ReopenAccessLogs(context.Background())) }()
			case syscall.SIGUSR2:
				go func() { m.logErr("upgrade", m.Upgrade(context.Background())) }()
			}
		}
	}
}

// Resize adds delta workers to the count it finds when its turn comes (never below zero
// nor above MaxWorkers): it waits its turn as Reload does. TTIN and TTOU use it.
func (m *Master) Resize(ctx context.Context, delta int) error {
	return m.submit(ctx, "scale", func(ctx context.Context, c *cluster) error {
		return c.scale(ctx, min(max(c.members+delta, 0), MaxWorkers))
	})
}

// ScaleBy adds delta workers (removes them if delta is negative) to the count the loop
// holds when the operation's turn comes, and returns the count it scaled to. Unlike Resize
// it refuses a step that would go below zero or above MaxWorkers (n is then the count
// that runs). olio scale +N and -N use it: the step is applied to the count the master
// holds, not to one a client read before.
func (m *Master) ScaleBy(ctx context.Context, delta int) (n int, err error) {
	err = m.submit(ctx, "scale", func(ctx context.Context, c *cluster) error {
		n = c.members
		to := n + delta
		if to < 0 || to > MaxWorkers {
			return fmt.Errorf("%w: cannot scale by %+d: the cluster has %d, and the count must stay between 0 and %d", ErrConfig, delta, n, MaxWorkers)
		}
		if err := c.scale(ctx, to); err != nil {
			return err
		}
		n = to
		return nil
	})
	return n, err
}

func (m *Master) logErr(what string, err error) {
	if err != nil {
		m.logger.Error(what+" failed", "err", err)
	}
}
