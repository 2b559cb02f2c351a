package monitor

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// Child is one started process. A goroutine owned by the Child waits for its
// exit; Done is closed then.
type Child struct {
	name    string
	proc    Process
	pid     int
	started time.Time

	done chan struct{}
	err  error // written before done is closed

	termOnce sync.Once
}

// Start starts c with st (nil means [OS]) and returns the running Child. A
// start failure wraps [ErrStart].
func Start(st Starter, c *Command) (*Child, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil command", ErrStart)
	}
	if st == nil {
		st = OS
	}
	p, err := st.Start(c)
	if err != nil {
		if !errors.Is(err, ErrStart) {
			err = fmt.Errorf("%w: %w", ErrStart, err)
		}
		return nil, fmt.Errorf("monitor: %s: %w", c.Name, err)
	}
	if p == nil {
		return nil, fmt.Errorf("monitor: %s: %w: starter returned no process", c.Name, ErrStart)
	}
	ch := &Child{
		name:    c.Name,
		proc:    p,
		pid:     p.Pid(),
		started: time.Now(),
		done:    make(chan struct{}),
	}
	go ch.wait()
	return ch, nil
}

// wait is the one call of Process.Wait.
func (c *Child) wait() {
	c.err = c.proc.Wait()
	close(c.done)
}

// Name is the Command's name.
func (c *Child) Name() string { return c.name }

// Pid is the process id.
func (c *Child) Pid() int { return c.pid }

// StartedAt is when the process was started.
func (c *Child) StartedAt() time.Time { return c.started }

// Done is closed when the process has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Err is the exit error (nil for exit status 0, an *exec.ExitError for the
// OS starter otherwise). It is nil until Done is closed.
func (c *Child) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Signal sends sig to the child's process group.
func (c *Child) Signal(sig syscall.Signal) error {
	return c.proc.Signal(sig)
}

// Stop sends SIGTERM to the child's process group, SIGKILL after grace (at
// once if grace <= 0), and returns when the child has exited. It is
// idempotent and safe to call concurrently; SIGTERM is sent once. It returns
// nil once the child has exited (whatever its status, see Err), and an error
// only if SIGKILL could not be delivered to a running child.
func (c *Child) Stop(grace time.Duration) error {
	select {
	case <-c.done:
		return nil
	default:
	}
	if grace > 0 {
		c.termOnce.Do(func() { _ = c.proc.Signal(syscall.SIGTERM) })
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-c.done:
			return nil
		case <-t.C:
		}
	}
	if err := c.proc.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, syscall.ESRCH) {
		select {
		case <-c.done:
			return nil
		default:
			return fmt.Errorf("monitor: stop %s (pid %d): %w", c.name, c.pid, err)
		}
	}
	<-c.done
	return nil
}

// exitErr describes the exit as an error wrapping ErrExited.
func (c *Child) exitErr() error {
	if err := c.Err(); err != nil {
		return fmt.Errorf("%s (pid %d): %w: %w", c.name, c.pid, ErrExited, err)
	}
	return fmt.Errorf("%s (pid %d): %w with status 0", c.name, c.pid, ErrExited)
}
