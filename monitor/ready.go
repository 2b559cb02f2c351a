package monitor

import (
	"context"
	"fmt"
	"net"
	"time"
)

// Poll intervals of WaitDial: the first retry comes quickly, later ones back
// off to dialMaxInterval.
const (
	dialMinInterval = 20 * time.Millisecond
	dialMaxInterval = 200 * time.Millisecond
	dialTimeout     = time.Second // one connect attempt
)

// WaitDial polls a connect to addr until one succeeds, then closes it and
// returns nil. It returns an error wrapping [ErrExited] if c (which may be
// nil) exits first, and one wrapping ctx's error if ctx is done first.
func WaitDial(ctx context.Context, network, addr string, c *Child) error {
	var exited <-chan struct{}
	if c != nil {
		exited = c.Done()
	}
	var d net.Dialer
	interval := dialMinInterval
	var last error
	for {
		select {
		case <-exited:
			return fmt.Errorf("monitor: waiting for %s %s: %w", network, addr, c.exitErr())
		default:
		}
		actx, cancel := context.WithTimeout(ctx, dialTimeout)
		conn, err := d.DialContext(actx, network, addr)
		cancel()
		if err == nil {
			return conn.Close()
		}
		last = err
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("monitor: waiting for %s %s: %w (last attempt: %v)", network, addr, ctx.Err(), last)
		case <-exited:
			t.Stop()
			return fmt.Errorf("monitor: waiting for %s %s: %w", network, addr, c.exitErr())
		case <-t.C:
		}
		interval = min(interval*2, dialMaxInterval)
	}
}
