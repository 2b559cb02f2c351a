package listener

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/monitor"
	"github.com/olio-dev/olio/router/process"
)

// cluster is the master's cluster state: the worker table, the member count, the epoch,
// the running configuration and whether a hot upgrade's routers still hold their keys. It
// belongs to one goroutine, Master.loop: reload, scale, upgrade and stop are requests to
// it (Master.submit), run one after the other on it. Every other goroutine reads the view
// that the loop last published (Master.snapshot).
//
// Two things cannot wait for an operation to end, and take a priority path into the loop
// instead of submit: the old master saying it has drained, upon which a hot upgrade's
// routers release the keys they hold (release), and a router becoming ready, upon which
// the master may hand over from the old one (checkReady). They come on channels of their
// own (Master.oldDrained, Master.readyNudge), buffered so that the sender never blocks.
// The loop serves them before the next operation, and while an operation waits: every
// long wait of an operation goes through wait, which serves them meanwhile. A handler
// thus runs between two steps of an operation, where the cluster is as last published.
//
// The cluster does not hold the Master: what it uses of it is in the fields below,
// set once by bareCluster and only read after.
type cluster struct {
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
	// held: the routers of a master started by a hot upgrade hold their own keys until the
	// old master has drained (exclusive hand-over), since heldSince; cleared by release.
	held      bool
	heldSince time.Time

	// What the loop uses of the master. The functions are the Master's methods of the
	// same names (unless said otherwise), which touch no cluster state.
	logger       *slog.Logger
	life         context.Context // ends when a stop begins
	views        *atomic.Pointer[view]
	nextID       func() uint64
	exe          string   // the binary a hot upgrade runs
	args         []string // olio's command line, re-executed by a hot upgrade
	starter      monitor.Starter
	lnFile       *os.File
	secret       string
	reloadConfig func() (Config, error) // Options.Reload; nil: a reload keeps the config
	notify       func(state string)
	errorLog     func() *log.Logger
	newWorker    func(index int, cfg Config) *worker
	routerConfig func(cfg Config, index int) *descend.Config
	membership   func(v *view, id uint64) *descend.Membership
	notApplied   func(old, cfg Config) []string
	// The run directory, which checkRunDir renews.
	runDir       *atomic.Pointer[runDir]
	runDirNote   *atomic.Pointer[string]
	runDirFailed *atomic.Bool
	handedOver   chan<- struct{} // a new master took over
	oldDrained   <-chan error    // priority: the old master has drained (see release)
	readyNudge   <-chan struct{} // priority: a router became ready (see checkReady)
	allReady     func()          // every member may be ready: Master.checkReady
}

// view is what the loop last published of its cluster, for the other goroutines. It is
// never changed once published.
type view struct {
	cfg     Config
	workers []*worker
	members int
	epoch   uint64
	held    bool // see cluster.held
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

// snapshot is the cluster as the loop last published it.
func (c *cluster) snapshot() *view { return c.views.Load() }

// publish makes the cluster's current state what snapshot returns.
func (c *cluster) publish() {
	c.views.Store(&view{cfg: c.cfg, workers: append([]*worker(nil), c.workers...), members: c.members, epoch: c.epoch, held: c.held})
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
// (Options.Running); with none, a standby answers until the cluster grows. Under
// --handover exclusive its routers hold their keys until the old master has drained.
func (m *Master) newCluster(cfg Config) (*cluster, error) {
	c := m.bareCluster(cfg)
	c.members, c.configured = cfg.Workers, cfg.Workers
	if r := m.opts.Running; r != nil {
		c.members = r.Workers
		if r.Configured > 0 {
			c.configured = r.Configured
		}
	}
	if m.opts.UpgradeDrained != nil && cfg.Handover == process.HandoverExclusive {
		c.held, c.heldSince = true, time.Now()
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

// bareCluster is a cluster of m running cfg with no workers: what it uses of m, and the
// first epoch.
func (m *Master) bareCluster(cfg Config) *cluster {
	return &cluster{
		cfg:          cfg,
		epoch:        1,
		logger:       m.logger,
		life:         m.life,
		views:        &m.view,
		nextID:       m.nextID,
		exe:          m.exe,
		args:         m.opts.Args,
		starter:      m.opts.Starter,
		lnFile:       m.lnFile,
		secret:       m.secret,
		reloadConfig: m.opts.Reload,
		notify:       m.notify,
		errorLog:     m.errorLog,
		newWorker:    m.newWorker,
		routerConfig: m.routerConfig,
		membership:   m.membership,
		notApplied:   m.notApplied,
		runDir:       &m.runDir,
		runDirNote:   &m.runDirNote,
		runDirFailed: &m.runDirFailed,
		handedOver:   m.handedOver,
		oldDrained:   m.oldDrained,
		readyNudge:   m.readyNudge,
		allReady:     m.checkReady,
	}
}

// loop owns c from here on: it starts its workers, then runs each operation sent with
// submit, one at a time, until stop asks it to drain and stop every worker. What comes on
// the priority path (see cluster) goes before the next operation.
func (m *Master) loop(c *cluster, stop <-chan struct{}) {
	c.publish() // before the first hello: a router is configured from the view
	for _, w := range c.workers {
		w.start()
	}
	if c.members == 0 {
		c.allReady() // no worker to wait for (a hot upgrade of a cluster scaled to zero)
	}
	for {
		c.serveUrgent()
		select {
		case req := <-m.requests:
			req.reply <- c.run(req)
		case err := <-c.oldDrained:
			c.release(err)
		case <-c.readyNudge:
			c.allReady()
		case <-stop:
			c.stop()
			return
		}
	}
}

// serveUrgent serves what waits on the priority path, if anything, and returns.
func (c *cluster) serveUrgent() {
	for {
		select {
		case err := <-c.oldDrained:
			c.release(err)
		case <-c.readyNudge:
			c.allReady()
		default:
			return
		}
	}
}

// wait runs block on a goroutine of its own and, until it returns, serves the priority
// path: an operation's long waits (for routers' answers, new routers, a new master) go
// through it so that a release or a hand-over does not wait for the whole operation.
// block must not touch c: it runs beside the priority path's handlers. wait is for
// operations only: a handler never calls it.
func (c *cluster) wait(block func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		block()
	}()
	for {
		select {
		case <-done:
			return
		case err := <-c.oldDrained:
			c.release(err)
		case <-c.readyNudge:
			c.allReady()
		}
	}
}

// callAll is callAll through wait.
func (c *cluster) callAll(ctx context.Context, workers []*worker, msg func(i int) descend.Request) (errs []error) {
	c.wait(func() { errs = callAll(ctx, workers, msg) })
	return errs
}

// restart is w.restart through wait: one worker's step of a rolling restart.
func (c *cluster) restart(ctx context.Context, w *worker) (err error) {
	c.wait(func() { err = w.restart(ctx) })
	return err
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
	upgraded := c.drained != nil // a new master's routers serve the keys next
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.drain(ctx, upgraded) }()
	}
	c.wait(wg.Wait) // a hot upgrade's routers still held are released meanwhile
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
	dir := process.RunDir(m.RunDir())
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
	if c.cfg.Handover == process.HandoverExclusive {
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
