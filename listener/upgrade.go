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
// running state it must keep (fd 5, see Handover). The new master starts its own routers and apps on the same socket; once every one
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

// Handover is the running state an old master passes to the new one on UpgradeStateFD:
// what changed at run time rather than in the configuration, which the new master reads
// for itself.
type Handover struct {
	Secret string `json:"secret"`
	// Workers is the running worker count, zero included (scaled to zero): what the last
	// scale, TTIN, TTOU, WINCH or reload left.
	Workers int `json:"workers"`
	// Configured is the worker count the configuration last asked for (at start or at
	// the last reload that succeeded): a reload after the upgrade changes the running
	// count only if the configuration's count differs from it. 0 from an olio that did
	// not send it.
	Configured int `json:"configured,omitempty"`
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
// drains and Run returns. It waits its turn as Reload does.
func (m *Master) Upgrade(ctx context.Context) error {
	return m.submit(ctx, "upgrade", func(ctx context.Context, c *cluster) error { return c.upgrade(ctx) })
}

// upgrade is Upgrade on the loop.
func (c *cluster) upgrade(ctx context.Context) error {
	if len(c.args) == 0 {
		return fmt.Errorf("%w: no command line to re-execute", ErrUpgrade)
	}
	child, ready, drained, err := c.startNewMaster()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUpgrade, err)
	}
	timeout := c.cfg.ReadyTimeout + 30*time.Second
	c.wait(func() { err = awaitNewMaster(ctx, child, ready, timeout) })
	if err != nil {
		c.logger.Error("upgrade failed; stopping the new master and serving on", "new_pid", child.Pid(), "err", err)
		child.Stop(5 * time.Second)
		drained.Close()
		return fmt.Errorf("%w: %w", ErrUpgrade, err)
	}
	c.logger.Info("upgrade: new master is ready; draining this one", "new_pid", child.Pid(), "old_pid", os.Getpid())
	c.over, c.drained = true, drained // told once this master has drained (stop)
	select {
	case c.handedOver <- struct{}{}:
	default:
	}
	return nil
}

// startNewMaster starts the new master with the listening socket and its three pipes, and
// sends it the running state. It returns the new master and this master's ends of the
// ready pipe (the new master says descend.WordReady on it) and of the drained pipe (this
// one says descend.WordDrained).
func (c *cluster) startNewMaster() (child *monitor.Child, ready, drained *os.File, err error) {
	rs, ws, err := pipes(3) // ready, state, drained
	if err != nil {
		return nil, nil, nil, err
	}
	theirs := []*os.File{ws[0], rs[1], rs[2]} // at UpgradeReadyFD, UpgradeStateFD, UpgradeDrainedFD
	c.logger.Info("upgrade: starting a new master", "exe", c.exe)
	child, err = monitor.Start(c.starter, &monitor.Command{
		Name:       "new master",
		Path:       c.exe,
		Args:       upgradeArgs(c.args),
		Env:        os.Environ(),
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: append([]*os.File{c.lnFile}, theirs...),
		NoDeathSig: true, // it must outlive this master
	})
	for _, f := range theirs {
		f.Close()
	}
	if err != nil {
		rs[0].Close()
		ws[1].Close()
		ws[2].Close()
		return nil, nil, nil, err
	}
	json.NewEncoder(ws[1]).Encode(Handover{Secret: c.secret, Workers: c.members, Configured: c.configured})
	ws[1].Close()
	return child, rs[0], ws[2], nil
}

// pipes makes n pipes: their read ends and their write ends. On error none is left open.
func pipes(n int) (rs, ws []*os.File, err error) {
	for range n {
		r, w, err := os.Pipe()
		if err != nil {
			for i := range rs {
				rs[i].Close()
				ws[i].Close()
			}
			return nil, nil, err
		}
		rs, ws = append(rs, r), append(ws, w)
	}
	return rs, ws, nil
}

// awaitNewMaster waits until the new master child says it is ready on the pipe ready, which
// it closes. The error says why not: the new master exited or was not ready within
// timeout, or ctx ended.
func awaitNewMaster(ctx context.Context, child *monitor.Child, ready *os.File, timeout time.Duration) error {
	defer ready.Close()
	said := make(chan error, 1)
	go func() { said <- descend.WordReady.Await(ready) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-said:
		if errors.Is(err, io.EOF) {
			// The pipe closes as the new master exits: give its exit status a moment to
			// come in, so the message can say how it ended.
			select {
			case <-child.Done():
				return fmt.Errorf("new master exited before it was ready: %s", exitDesc(child.Err()))
			case <-time.After(time.Second):
				return errors.New("new master closed its ready pipe before it was ready")
			}
		}
		if err != nil {
			return fmt.Errorf("new master's ready pipe: %w", err)
		}
		return nil
	case <-child.Done():
		return fmt.Errorf("new master exited before it was ready: %s", exitDesc(child.Err()))
	case <-t.C:
		return fmt.Errorf("new master not ready within %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
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
// process is now. It runs once, on the loop, from checkReady (allReady), and leaves opts
// as New set them: upgrading still says how this master started.
func (m *Master) handOver() {
	if m.opts.UpgradeReady == nil {
		return
	}
	m.notify("MAINPID=" + strconv.Itoa(os.Getpid()))
	if err := descend.WordReady.Say(m.opts.UpgradeReady); err != nil {
		m.logger.Warn("upgrade: tell the old master", "err", err)
	}
	m.opts.UpgradeReady.Close()
}

// awaitDrained, in a master started by a hot upgrade under --handover exclusive, waits
// until the old master says it has drained (or is gone: the pipe closes), and tells the
// loop on its priority path (Master.oldDrained), which then releases the keys the routers
// hold (cluster.release): no key is served by both generations at once.
func (m *Master) awaitDrained(drained *os.File) {
	// A stop before the old master has drained ends the wait (Close interrupts the read).
	unhook := context.AfterFunc(m.life, func() { drained.Close() })
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer unhook()
		defer drained.Close()
		m.oldDrained <- descend.WordDrained.Await(drained) // buffered: sent once, never waits
	}()
}

// release, on the loop, lets every router serve its own keys once the old master has
// drained (err nil) or cannot say so (see awaitDrained).
func (c *cluster) release(err error) {
	if !c.held {
		return
	}
	if err != nil {
		c.logger.Warn("upgrade: the old master did not say it drained; serving all the same", "err", err)
	}
	c.held = false
	c.publish() // before the calls: a router saying hello meanwhile is not held (see worker.hello)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Not through wait: release is a handler of the priority path itself.
	errs := callAll(ctx, c.workers, func(int) descend.Request { return &descend.Release{ID: c.nextID()} })
	for i, err := range errs {
		if err != nil {
			c.logger.Warn("upgrade: release a router", "worker", c.workers[i].index, "err", err)
		}
	}
	c.logger.Info("upgrade: the old master has drained; serving every key", "held", time.Since(c.heldSince).Round(time.Millisecond).String())
}
