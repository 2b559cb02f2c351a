package listener

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router"
)

// cluster is the master's cluster state: the worker table, the member count, the epoch and
// the running configuration. It belongs to one goroutine, Master.loop: reload, scale,
// upgrade and stop are requests to it (Master.submit), run one after the other on it.
// Every other goroutine reads the view that the loop last published (Master.snapshot).
type cluster struct {
	*Master
	cfg     Config
	workers []*worker // index → worker, members first; may hold some being added
	members int       // how many own keys
	epoch   uint64
	// configured is the worker count the configuration (flags and file) last asked for:
	// a reload changes the running count only when the configuration changes that
	// number, so that it does not undo an olio scale, TTIN or TTOU.
	configured int
	standby    *standby // answers 503 while there are no workers
	drained    *os.File // after a hot upgrade: tells the new master once drained
	over       bool     // a hot upgrade has handed the service over: no more operations
}

// view is what the loop last published of its cluster, for the other goroutines. It is
// never changed once published.
type view struct {
	cfg     Config
	workers []*worker
	members int
	epoch   uint64
}

// opRequest asks the loop to run one operation (tableflip style): do runs on the loop's
// goroutine with a context that also ends when a stop begins.
type opRequest struct {
	ctx   context.Context
	do    func(ctx context.Context, c *cluster) error
	reply chan error // buffered 1: the answer never blocks the loop
}

// snapshot is the cluster as the loop last published it.
func (m *Master) snapshot() *view { return m.view.Load() }

// publish makes the cluster's current state what snapshot returns.
func (c *cluster) publish() {
	c.view.Store(&view{cfg: c.cfg, workers: append([]*worker(nil), c.workers...), members: c.members, epoch: c.epoch})
}

// submit runs do on the loop and returns its error. An operation that arrives while
// another runs waits its turn (they run in the order they arrive); ErrStopped once a stop
// has begun or a hot upgrade has handed the service over.
func (m *Master) submit(ctx context.Context, what string, do func(ctx context.Context, c *cluster) error) error {
	if m.life.Err() != nil {
		return ErrStopped
	}
	req := &opRequest{ctx: ctx, do: do, reply: make(chan error, 1)}
	select {
	case m.requests <- req:
	default:
		m.queued.Add(1)
		m.logger.Info(what + ": waiting for the operation in progress to finish")
		select {
		case m.requests <- req:
			m.queued.Add(-1)
		case <-m.life.Done():
			m.queued.Add(-1)
			return ErrStopped
		case <-ctx.Done():
			m.queued.Add(-1)
			return fmt.Errorf("%s: waiting for the operation in progress: %w", what, ctx.Err())
		}
	}
	return <-req.reply
}

// newCluster is the cluster of a master starting with cfg: its workers made, not started.
// A master started by a hot upgrade starts with the old master's running count instead
// (Options.Running); with none, a standby answers until the cluster grows.
func (m *Master) newCluster(cfg Config) (*cluster, error) {
	c := &cluster{Master: m, cfg: cfg, members: cfg.Workers, configured: cfg.Workers, epoch: 1}
	if r := m.opts.Running; r != nil {
		c.members = r.Workers
		if r.Configured > 0 {
			c.configured = r.Configured
		}
	}
	if c.members == 0 {
		sb, err := newStandby(m.lnFile, m.errorLog())
		if err != nil {
			return nil, err
		}
		c.standby = sb
	}
	for i := 0; i < c.members; i++ {
		c.workers = append(c.workers, m.newWorker(i, cfg))
	}
	return c, nil
}

// loop owns c from here on: it starts its workers, then runs each operation sent with
// submit, one at a time, until stop asks it to drain and stop every worker.
func (m *Master) loop(c *cluster, stop <-chan struct{}) {
	c.publish() // before the first hello: a router is configured from the view
	for _, w := range c.workers {
		w.start()
	}
	if c.members == 0 {
		m.workerReady() // no worker to wait for (a hot upgrade of a cluster scaled to zero)
	}
	for {
		select {
		case req := <-m.requests:
			req.reply <- c.run(req)
		case <-stop:
			c.stop()
			return
		}
	}
}

// run runs one operation with a context that a stop also ends, so that a stop does not
// wait for as long as the operation would take.
func (c *cluster) run(req *opRequest) error {
	if c.over || c.life.Err() != nil {
		return ErrStopped
	}
	ctx, cancel := context.WithCancel(req.ctx)
	defer cancel()
	defer context.AfterFunc(c.life, cancel)()
	c.checkRunDir(ctx) // a reload or scale right after the run directory was removed
	return req.do(ctx, c)
}

// stop drains every router, then stops them all. A hot upgrade's new master hears, once
// they have drained, that it may serve every key.
func (c *cluster) stop() {
	if c.standby != nil {
		c.standby.close()
		c.standby = nil
	}
	workers := c.workers
	c.logger.Info("stopping: draining workers", "workers", len(workers))
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.drain(ctx) }()
	}
	wg.Wait()
	if c.drained != nil {
		if err := descend.WordDrained.Say(c.drained); err != nil {
			c.logger.Warn("upgrade: tell the new master this one has drained", "err", err)
		}
		c.drained.Close()
		c.drained = nil
	}
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.cancel(); <-w.done }()
	}
	wg.Wait()
	c.logger.Info("stopped")
}

// membership is the Membership message of v. Peers lists every running router, members or
// not: a router being removed stays reachable until it has finished the requests
// forwarded to it.
func (m *Master) membership(v *view, id uint64) *descend.Membership {
	peers := make([]string, max(v.members, len(v.workers)))
	dir := router.RunDir(m.RunDir())
	for i := range peers {
		peers[i] = dir.PeerSocket(i)
	}
	return &descend.Membership{ID: id, Epoch: v.epoch, Workers: v.members, Peers: peers}
}

// announce sets the member count, bumps the epoch, publishes them and tells every live
// router, waiting for each to acknowledge. A router saying hello meanwhile gets the new
// membership from the view (see worker.hello). Under --handover exclusive it first
// prepares the change (see prepare).
func (c *cluster) announce(ctx context.Context, members int) error {
	if c.cfg.Handover == router.HandoverExclusive {
		c.prepare(ctx, members)
	}
	c.members = members
	c.epoch++
	c.publish()
	v := c.snapshot()
	errs := c.callAll(ctx, v.workers, func(int) descend.Request { return c.membership(v, c.nextID()) })
	return errors.Join(errs...)
}

// prepare is the first phase of an exclusive membership change: every live router holds
// the requests whose owner changes with members, finishes those it routed before, and
// acknowledges; the commit (announce's Membership) then releases them. No request routed
// by the old count is then running anywhere when a new owner starts on a moved key. A
// router that does not acknowledge within its bound (--forward-timeout) is logged, and the
// change is committed all the same: a stuck request does not stop a scale.
func (c *cluster) prepare(ctx context.Context, members int) {
	epoch := c.epoch + 1
	start := time.Now()
	errs := c.callAll(ctx, c.workers, func(int) descend.Request {
		return &descend.Prepare{ID: c.nextID(), Epoch: epoch, Workers: members}
	})
	for _, err := range errs {
		if err != nil {
			c.logger.Warn("hand-over: a router did not finish its requests for moving keys; committing all the same", "err", err)
		}
	}
	c.logger.Info("hand-over prepared", "epoch", epoch, "workers", members, "held", time.Since(start).Round(time.Microsecond).String())
}
