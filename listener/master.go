package listener

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router"
)

// Options are the master's collaborators, as opposed to its Config.
type Options struct {
	Logger    *slog.Logger // nil: discard
	LogOutput io.Writer    // where routers' log lines go; nil: os.Stderr
	LogFormat string       // "text" or "json", passed to routers
	// Exe is the olio binary that routers (and a hot upgrade) run; empty: os.Executable.
	Exe string
	// DemoArgs is the command line of the built-in demo app, relative to Exe, used when
	// Config.App is empty.
	DemoArgs []string
	// Reload re-reads the configuration for a reload; nil: a reload keeps the config.
	Reload func() (Config, error)
	// Listener is an inherited listening socket (hot upgrade); nil: bind Config.Listen.
	Listener *os.File
	// Notify sends systemd notifications; nil: none.
	Notify func(state string)
	// Args is olio's command line after the program name, re-executed by a hot upgrade.
	Args []string
	// UpgradeReady, for a master started by a hot upgrade, is the pipe on which it tells
	// the old master that it is ready (see Upgrade).
	UpgradeReady *os.File
	// UpgradeDrained, for a master started by a hot upgrade, is the pipe on which the old
	// master says it has drained; nil when the old master passed none.
	UpgradeDrained *os.File
}

// Master is the olio master. Make it with New and run it with Run.
type Master struct {
	opts   Options
	logger *slog.Logger
	exe    string
	lnFile *os.File
	addr   net.Addr
	runDir string
	secret string
	ids    atomic.Uint64
	wg     sync.WaitGroup // reader goroutines
	op     sync.Mutex     // one reload, resize, upgrade or stop at a time
	start  time.Time
	outMu  sync.Mutex // whole router log lines into opts.LogOutput

	mu      sync.Mutex
	cfg     Config
	workers []*worker // index → worker, members first; may hold one being added
	members int       // how many own keys
	// configured is the worker count the configuration (flags and file) last asked for:
	// a reload changes the running count only when the configuration changes that
	// number, so that it does not undo an olio scale, TTIN or TTOU.
	configured int
	epoch      uint64
	ready      bool // all members have been ready once
	stopping   bool
	leaving    bool      // a stop has begun: /ready says 503 (set before the drain delay)
	retiring   []*worker // the workers a graceful stop is draining: Kill's too
	standby    *standby  // answers 503 while there are no workers
	ops        *ops      // set by Run before any worker starts

	handedOver chan struct{} // a new master took over (hot upgrade)
	drained    *os.File      // after a hot upgrade: told the new master once drained
	// held: the routers of a master started by a hot upgrade hold their own keys until the
	// old master has drained (exclusive hand-over); cleared by releaseAll.
	held     bool
	killed   chan struct{} // closed by Kill: a drain delay ends at once
	killOnce sync.Once
	upgraded atomic.Bool // set with handedOver

	// life ends when a stop begins: operations in progress (beginOp) give way to it.
	life    context.Context
	endLife context.CancelFunc
}

// beginOp starts a reload, scale or upgrade: it takes the operation lock and returns ctx,
// also cancelled when a stop begins, so that the operation gives way to a stop instead of
// holding it up for as long as it takes. end releases both. ErrStopped once olio is
// stopping (end must still be called).
func (m *Master) beginOp(ctx context.Context) (_ context.Context, end func(), err error) {
	m.op.Lock()
	ctx, cancel := context.WithCancel(ctx)
	unhook := func() bool { return false }
	if m.life != nil {
		unhook = context.AfterFunc(m.life, cancel)
	}
	end = func() { unhook(); cancel(); m.op.Unlock() }
	m.mu.Lock()
	stopping := m.stopping || m.leaving
	m.mu.Unlock()
	if stopping {
		return ctx, end, ErrStopped
	}
	return ctx, end, nil
}

// New validates cfg, binds the public socket (or adopts opts.Listener), makes the secret
// and the run directory. Nothing is started until Run.
func New(cfg Config, opts Options) (*Master, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stderr
	}
	if opts.LogFormat == "" {
		opts.LogFormat = "text"
	}
	m := &Master{opts: opts, logger: opts.Logger, cfg: cfg, start: time.Now(), handedOver: make(chan struct{}, 1),
		killed: make(chan struct{})}
	m.life, m.endLife = context.WithCancel(context.Background())
	m.exe = opts.Exe
	if m.exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the olio binary: %w", err)
		}
		m.exe = exe
	}
	secret, err := loadSecret(&cfg)
	if err != nil {
		return nil, err
	}
	m.secret = secret
	if opts.Listener != nil {
		m.lnFile = opts.Listener
		if m.addr, err = fileAddr(opts.Listener); err != nil {
			return nil, err
		}
	} else if m.lnFile, m.addr, err = Bind(cfg.Listen); err != nil {
		return nil, err
	}
	if m.runDir, err = makeRunDir(cfg.RunDir); err != nil {
		m.lnFile.Close()
		return nil, err
	}
	return m, nil
}

// Addr is the public listener's address.
func (m *Master) Addr() net.Addr { return m.addr }

// RunDir is the private run directory.
func (m *Master) RunDir() string { return m.runDir }

func (m *Master) config() Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg
}

func (m *Master) nextID() uint64 { return m.ids.Add(1) }

// Run starts the workers and serves until ctx is done, then stops gracefully: every router
// stops accepting and finishes its requests (bounded by the shutdown timeout), then the
// routers stop their apps and exit. Use Kill from another goroutine to cut that short.
func (m *Master) Run(ctx context.Context) error {
	defer m.cleanup()
	// Control socket, metrics and pidfile, up before the workers and
	// down after them; a control `stop` cancels ctx.
	ctx, stopCtl := context.WithCancel(ctx)
	defer stopCtl()
	ops, err := m.startOps(stopCtl)
	if err != nil {
		return err
	}
	defer ops.close()
	cfg := m.config()
	m.logger.Info("olio starting", "listen", m.addr.String(), "workers", cfg.Workers, "key", cfg.Key,
		"pid", os.Getpid(), "run_dir", m.runDir)
	if d := m.opts.UpgradeDrained; d != nil {
		if cfg.Handover == router.HandoverExclusive {
			m.awaitDrained(d)
		} else {
			d.Close()
		}
	}
	m.mu.Lock()
	m.members, m.configured = cfg.Workers, cfg.Workers
	m.epoch = 1
	for i := 0; i < cfg.Workers; i++ {
		w := m.newWorkerLocked(i)
		m.workers = append(m.workers, w)
		w.start()
	}
	m.mu.Unlock()

	select {
	case <-ctx.Done():
	case <-m.handedOver:
		ops.closeMetrics() // the new master binds the address as soon as it is free
	}
	m.shutdown()
	return nil
}

// shutdown drains every router, then stops them all. With a drain delay, /ready says 503
// and every router keeps serving for the delay first (not after a hot upgrade, whose new
// master serves on).
func (m *Master) shutdown() {
	m.mu.Lock()
	m.leaving = true
	m.mu.Unlock()
	if m.endLife != nil {
		m.endLife() // a reload, scale or upgrade in progress stops where it is
	}
	if !m.upgraded.Load() {
		m.notify("STOPPING=1") // after a hot upgrade the service goes on: say nothing
		m.waitDrainDelay()
	}
	m.op.Lock()
	defer m.op.Unlock()
	m.mu.Lock()
	m.stopping = true
	workers := append([]*worker(nil), m.workers...)
	m.workers, m.retiring = nil, workers
	sb := m.standby
	m.standby = nil
	m.mu.Unlock()
	if sb != nil {
		sb.close()
	}
	m.logger.Info("stopping: draining workers", "workers", len(workers))
	ctx, cancel := context.WithTimeout(context.Background(), m.config().ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.drain(ctx) }()
	}
	wg.Wait()
	m.mu.Lock()
	drained := m.drained
	m.drained = nil
	m.mu.Unlock()
	if drained != nil { // a hot upgrade's new master waits for this to serve its keys
		io.WriteString(drained, upgradeDrained)
		drained.Close()
	}
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.cancel(); <-w.done }()
	}
	wg.Wait()
	m.logger.Info("stopped")
}

// Kill stops every router at once with SIGKILL (their apps follow by parent-death signal).
func (m *Master) Kill() {
	m.killOnce.Do(func() {
		if m.killed != nil {
			close(m.killed)
		}
	})
	m.mu.Lock()
	workers := append(append([]*worker(nil), m.workers...), m.retiring...)
	m.mu.Unlock()
	for _, w := range workers {
		if pid := w.sup.Status().Pid; pid > 0 {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
}

func (m *Master) cleanup() {
	m.wg.Wait()
	os.RemoveAll(m.runDir)
}

// workerReady notes a router's readiness and logs once when every member is ready.
func (m *Master) workerReady() {
	m.mu.Lock()
	if m.ready || m.stopping {
		m.mu.Unlock()
		return
	}
	for _, w := range m.workers[:m.members] {
		select {
		case <-w.ready:
		default:
			m.mu.Unlock()
			return
		}
	}
	m.ready = true
	n := m.members
	m.mu.Unlock()
	m.logger.Info("all workers ready", "workers", n, "listen", m.addr.String(), "startup", time.Since(m.start).Round(time.Millisecond).String())
	m.opsReady() // a hot upgrade's new master takes over control socket and pidfile
	m.handOver()
	m.notify("READY=1\nSTATUS=serving on " + m.addr.String() + " with " + strconv.Itoa(n) + " workers")
}

func (m *Master) notify(state string) {
	if m.opts.Notify != nil {
		m.opts.Notify(state)
	}
}

// routerConfig is the Config message for worker index.
func (m *Master) routerConfig(index int) *descend.Config {
	cfg := m.config()
	path, args := m.exe, m.opts.DemoArgs
	if len(cfg.App) > 0 {
		path, args = cfg.App[0], cfg.App[1:]
	}
	cpu := -1
	if cfg.CPUAffinity {
		cpu = index
	}
	return &descend.Config{
		Index:           index,
		Key:             cfg.Key,
		Secret:          m.secret,
		PublicAddr:      m.addr.String(),
		ClusterAddr:     cfg.ClusterAddr,
		RunDir:          m.runDir,
		AppPath:         path,
		AppArgs:         args,
		AppDir:          cfg.AppDir,
		ReadyMode:       cfg.ReadyMode,
		ReadyTimeout:    cfg.ReadyTimeout,
		ForwardTimeout:  cfg.ForwardTimeout,
		RequestTimeout:  cfg.RequestTimeout,
		ShutdownTimeout: cfg.ShutdownTimeout,
		MaxHeaderBytes:  cfg.MaxHeaderBytes,
		HeaderTimeout:   cfg.HeaderTimeout,
		BodyTimeout:     cfg.BodyTimeout,
		IdleTimeout:     cfg.IdleTimeout,
		MaxConns:        cfg.MaxConns,
		HealthTimeout:   cfg.HealthTimeout,
		CPU:             cpu,
		Handoff:         cfg.Handoff,
		Handover:        cfg.Handover,
		HandoverPath:    cfg.HandoverPath,
		KeyStats:        cfg.KeyStats,
		AccessLog:       accessLogPath(cfg.AccessLog),
		AccessLogFormat: m.opts.LogFormat,
	}
}

// accessLogPath is the access log's path as a router opens it: absolute, since an
// embedded worker runs in the app's directory.
func accessLogPath(path string) string {
	if path == "" || path == "-" {
		return path
	}
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// membershipLocked is the current Membership message; m.mu must be held. Peers lists every
// running router, members or not: a router being removed stays reachable until it has
// finished the requests forwarded to it.
func (m *Master) membershipLocked(id uint64) *descend.Membership {
	peers := make([]string, max(m.members, len(m.workers)))
	for i := range peers {
		peers[i] = filepath.Join(m.runDir, "router-"+strconv.Itoa(i)+".sock")
	}
	return &descend.Membership{ID: id, Epoch: m.epoch, Workers: m.members, Peers: peers}
}

// announce sets the member count, bumps the epoch and tells every live router, waiting
// for each to acknowledge. Routers starting meanwhile get it in their hello. Under
// --handover exclusive it first prepares the change (see prepare).
func (m *Master) announce(ctx context.Context, members int) error {
	if m.config().Handover == router.HandoverExclusive {
		m.prepare(ctx, members)
	}
	m.mu.Lock()
	m.members = members
	m.epoch++
	workers := append([]*worker(nil), m.workers...)
	msgs := make([]*descend.Membership, len(workers))
	for i := range workers {
		msgs[i] = m.membershipLocked(m.nextID())
	}
	m.mu.Unlock()
	errs := m.callAll(ctx, workers, func(i int) descend.Request { return msgs[i] })
	return errors.Join(errs...)
}

// routerOutput is where a router's stdout and stderr go: whole lines into the log output.
func (m *Master) routerOutput() io.Writer {
	return &lineWriter{out: m.opts.LogOutput, mu: &m.outMu}
}

// prepare is the first phase of an exclusive membership change: every live router holds
// the requests whose owner changes with members, finishes those it routed before, and
// acknowledges; the commit (announce's Membership) then releases them. No request routed
// by the old count is then running anywhere when a new owner starts on a moved key. A
// router that does not acknowledge within its bound (--forward-timeout) is logged, and the
// change is committed all the same: a stuck request does not stop a scale.
func (m *Master) prepare(ctx context.Context, members int) {
	m.mu.Lock()
	epoch := m.epoch + 1
	workers := append([]*worker(nil), m.workers...)
	m.mu.Unlock()
	start := time.Now()
	errs := m.callAll(ctx, workers, func(int) descend.Request {
		return &descend.Prepare{ID: m.nextID(), Epoch: epoch, Workers: members}
	})
	for _, err := range errs {
		if err != nil {
			m.logger.Warn("hand-over: a router did not finish its requests for moving keys; committing all the same", "err", err)
		}
	}
	m.logger.Info("hand-over prepared", "epoch", epoch, "workers", members, "held", time.Since(start).Round(time.Microsecond).String())
}

// callAll sends workers[i] the request msg(i), all at once, and waits for every answer. It
// returns the errors by worker (naming it), nil for a worker that answered or has no router.
func (m *Master) callAll(ctx context.Context, workers []*worker, msg func(i int) descend.Request) []error {
	var wg sync.WaitGroup
	errs := make([]error, len(workers))
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := w.call(ctx, msg(i)); err != nil && !errors.Is(err, ErrNoRouter) {
				errs[i] = err // call's errors name the worker
			}
		}()
	}
	wg.Wait()
	return errs
}
