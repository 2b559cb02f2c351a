package listener

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/monitor"
)

// Hot upgrade (USR2) works the way cloudflare/tableflip does: the old master starts the olio
// binary found at its own path — possibly a new build — as a new master, handing it the
// listening socket (fd 3), a pipe to say it is ready on (fd 4) and a pipe carrying the
// running state it must keep: the secret and the current worker count (fd 5). The new master starts its own routers and apps on the same socket; once every one
// of its workers is ready it writes "ready" on the pipe and tells systemd MAINPID=<its pid>.
// Only then does the old master drain its routers and exit. Both generations accept on the
// one socket while they overlap, so no connection is refused and no request is lost.
//
// If the new master exits, or is not ready within the ready timeout plus a margin, the old
// master stops it and keeps serving: a broken binary cannot take the service down.
// The new master has a new PID; under systemd use Type=notify with NotifyAccess=all so
// that systemd follows the MAINPID it announces.

// UpgradeFlag is the hidden serve flag that tells a new master it is taking over.
const UpgradeFlag = "--upgrade"

// Upgrade descriptors, as the new master sees them.
const (
	UpgradeListenerFD = 3
	UpgradeReadyFD    = 4
	UpgradeStateFD    = 5
	// UpgradeDrainedFD is where the old master says, with descend.WordDrained, that its routers
	// have finished every request they accepted: under --handover exclusive the new
	// master's routers serve their keys only from then on.
	UpgradeDrainedFD = 6
)

// Handover is the running state an old master passes to the new one on UpgradeStateFD.
type Handover struct {
	Secret  string `json:"secret"`
	Workers int    `json:"workers"`
}

// ReadHandover reads the old master's Handover from r (the new master's UpgradeStateFD).
func ReadHandover(r io.Reader) (Handover, error) {
	var h Handover
	if err := json.NewDecoder(io.LimitReader(r, 1<<16)).Decode(&h); err != nil {
		return h, fmt.Errorf("upgrade: read the old master's state: %w", err)
	}
	return h, nil
}

// Upgrade starts a new master from the olio binary at the path this one was started from
// and hands it the service. It returns nil once the new master is ready; this master then
// drains and Run returns.
func (m *Master) Upgrade(ctx context.Context) error {
	return m.submit(ctx, "upgrade", func(ctx context.Context, c *cluster) error { return c.upgrade(ctx) })
}

// upgrade is Upgrade on the loop.
func (c *cluster) upgrade(ctx context.Context) error {
	if len(c.opts.Args) == 0 {
		return fmt.Errorf("%w: no command line to re-execute", ErrUpgrade)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUpgrade, err)
	}
	defer readyR.Close()
	secretR, secretW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		return fmt.Errorf("%w: %w", ErrUpgrade, err)
	}
	drainedR, drainedW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		secretR.Close()
		secretW.Close()
		return fmt.Errorf("%w: %w", ErrUpgrade, err)
	}
	defer func() {
		if c.drained != drainedW { // kept by a successful upgrade until this master has drained (stop)
			drainedW.Close()
		}
	}()
	c.logger.Info("upgrade: starting a new master", "exe", c.exe)
	child, err := monitor.Start(nil, &monitor.Command{
		Name:       "new master",
		Path:       c.exe,
		Args:       upgradeArgs(c.opts.Args),
		Env:        os.Environ(),
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: []*os.File{c.lnFile, readyW, secretR, drainedR},
		NoDeathSig: true, // it must outlive this master
	})
	readyW.Close()
	secretR.Close()
	drainedR.Close()
	if err != nil {
		secretW.Close()
		return fmt.Errorf("%w: %w", ErrUpgrade, err)
	}
	state := Handover{Secret: c.secret, Workers: c.members}
	json.NewEncoder(secretW).Encode(state)
	secretW.Close()

	ready := make(chan error, 1)
	go func() { ready <- descend.WordReady.Await(readyR) }()
	timeout := c.cfg.ReadyTimeout + 30*time.Second
	t := time.NewTimer(timeout)
	defer t.Stop()
	fail := func(why error) error {
		c.logger.Error("upgrade failed; stopping the new master and serving on", "new_pid", child.Pid(), "err", why)
		child.Stop(5 * time.Second)
		return fmt.Errorf("%w: %w", ErrUpgrade, why)
	}
	select {
	case err := <-ready:
		if errors.Is(err, io.EOF) {
			// The pipe closes as the new master exits: give its exit status a moment to
			// come in, so the message can say how it ended.
			select {
			case <-child.Done():
				return fail(fmt.Errorf("new master exited before it was ready: %s", exitDesc(child.Err())))
			case <-time.After(time.Second):
				return fail(errors.New("new master closed its ready pipe before it was ready"))
			}
		}
		if err != nil {
			return fail(fmt.Errorf("new master's ready pipe: %w", err))
		}
	case <-child.Done():
		return fail(fmt.Errorf("new master exited before it was ready: %s", exitDesc(child.Err())))
	case <-t.C:
		return fail(fmt.Errorf("new master not ready within %s", timeout))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	c.logger.Info("upgrade: new master is ready; draining this one", "new_pid", child.Pid(), "old_pid", os.Getpid())
	c.over, c.drained = true, drainedW
	select {
	case c.handedOver <- struct{}{}:
	default:
	}
	return nil
}

// exitDesc says how a process ended, given its exit error (nil: status 0).
func exitDesc(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// upgradeArgs is the new master's command line: this one's with the upgrade flag added
// right after "serve".
func upgradeArgs(args []string) []string {
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == UpgradeFlag })
	i := slices.Index(args, "serve")
	if i < 0 {
		return append([]string{"serve", UpgradeFlag}, args...)
	}
	return slices.Insert(args, i+1, UpgradeFlag)
}

// handOver tells the old master that this new one is ready, and systemd who the main
// process is now.
func (m *Master) handOver() {
	if m.opts.UpgradeReady == nil {
		return
	}
	m.notify("MAINPID=" + strconv.Itoa(os.Getpid()))
	if err := descend.WordReady.Say(m.opts.UpgradeReady); err != nil {
		m.logger.Warn("upgrade: tell the old master", "err", err)
	}
	m.opts.UpgradeReady.Close()
	m.opts.UpgradeReady = nil
}

// awaitDrained, in a master started by a hot upgrade under --handover exclusive, holds its
// routers' own keys until the old master says it has drained (or is gone: the pipe
// closes), then releases them, so that no key is served by both generations at once.
func (m *Master) awaitDrained(drained *os.File) {
	m.held.Store(true)
	// A stop before the old master has drained ends the wait (Close interrupts the read).
	unhook := context.AfterFunc(m.life, func() { drained.Close() })
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer unhook()
		defer drained.Close()
		start := time.Now()
		if err := descend.WordDrained.Await(drained); err != nil {
			m.logger.Warn("upgrade: the old master did not say it drained; serving all the same", "err", err)
		}
		m.releaseAll()
		m.logger.Info("upgrade: the old master has drained; serving every key", "held", time.Since(start).Round(time.Millisecond).String())
	}()
}

// releaseAll lets every router serve its own keys (see awaitDrained).
func (m *Master) releaseAll() {
	m.held.Store(false) // before reading the view: see worker.hello
	workers := m.snapshot().workers
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, w := range workers {
		if _, err := w.call(ctx, &descend.Release{ID: m.nextID()}); err != nil && !errors.Is(err, ErrNoRouter) {
			m.logger.Warn("upgrade: release a router", "worker", w.index, "err", err)
		}
	}
}
