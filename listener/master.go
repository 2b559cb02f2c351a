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
	"github.com/olio-dev/olio/monitor"
)

// Options are the master's collaborators, as opposed to its Config.
type Options struct {
	Logger    *slog.Logger // nil: discard
	LogOutput io.Writer    // where routers' log lines go; nil: os.Stderr
	LogFormat string       // "text" or "json", passed to routers
	// Exe is the olio binary that routers (and a hot upgrade) run; empty: os.Executable,
	// and then routers run this process's own binary even if the file at that path is
	// replaced (see routerExe).
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
	// Starter starts the router processes (each worker's supervisor uses it) and a hot
	// upgrade's new master; nil: the operating system (monitor.OS). Tests give a fake that
	// speaks descend.
	Starter monitor.Starter
	// UpgradeDrained, for a master started by a hot upgrade, is the pipe on which the old
	// master says it has drained; nil when the old master passed none.
	UpgradeDrained *os.File
	// Running, for a master started by a hot upgrade, is the old master's running state:
	// the new one starts with its worker count (zero included) rather than
	// Config.Workers, and remembers the count its configuration last asked for (see
	// Handover). nil: start as Config says.
	Running *Handover
}

// Master is the olio master. Make it with New and run it with Run. Its cluster state —
// the worker table, the member count, the epoch — belongs to the goroutine that runs loop
// (see cluster); the fields here are set by New, or safe for concurrent use.
type Master struct {
	opts   Options
	logger *slog.Logger
	exe    string // the binary's path: a hot upgrade runs what is there then
	// routerExe is what routers run: this process's own binary (selfExe), whatever is at
	// exe now; or exe when Options.Exe names another.
	routerExe string
	lnFile    *os.File
	addr      net.Addr
	runDir    atomic.Pointer[runDir] // renewed when removed or replaced (watchRunDir)
	// runDirNote says when and why the run directory was last renewed, for Status.
	runDirNote   atomic.Pointer[string]
	runDirFailed atomic.Bool // a new run directory could not be made: logged once
	secret       string
	start        time.Time
	ids          atomic.Uint64
	wg           sync.WaitGroup // reader goroutines
	outMu        sync.Mutex     // whole router log lines into opts.LogOutput

	view     atomic.Pointer[view] // published by the loop; snapshot reads it
	requests chan *opRequest      // submit → loop
	queued   atomic.Int32         // operations waiting for the one in progress
	allReady atomic.Bool          // every member has been ready once (workerReady)
	ops      *ops                 // set by Run before any worker starts

	handedOver chan struct{} // a new master took over (hot upgrade)
	// The loop's priority path (see cluster), each buffered 1 so that a sender never
	// waits: the old master's word that it has drained (awaitDrained), and a nudge that a
	// router is ready (workerReady).
	oldDrained chan error
	readyNudge chan struct{}
	killed     chan struct{} // closed by Kill: a drain delay ends at once
	killOnce   sync.Once

	// life ends when a stop begins: an operation in progress gives way to it, and one
	// waiting its turn gets ErrStopped.
	life    context.Context
	endLife context.CancelFunc
}

// New validates cfg, binds the public socket (or adopts opts.Listener), makes the secret
// and the run directory. Nothing is started until Run.
func New(cfg Config, opts Options) (*Master, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if r := opts.Running; r != nil && (r.Workers < 0 || r.Workers > MaxWorkers || r.Configured < 0 || r.Configured > MaxWorkers) {
		return nil, fmt.Errorf("%w: the old master handed over %d workers (%d configured): want 0 to %d", ErrUpgrade, r.Workers, r.Configured, MaxWorkers)
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
	m := &Master{opts: opts, logger: opts.Logger, start: time.Now(), handedOver: make(chan struct{}, 1),
		killed: make(chan struct{}), requests: make(chan *opRequest),
		oldDrained: make(chan error, 1), readyNudge: make(chan struct{}, 1)}
	m.life, m.endLife = context.WithCancel(context.Background())
	m.view.Store(&view{cfg: cfg})
	m.exe, m.routerExe = opts.Exe, opts.Exe
	if m.exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the olio binary: %w", err)
		}
		m.exe, m.routerExe = exe, ownBinary(exe)
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
	dir, err := newRunDir(cfg.RunDir)
	if err != nil {
		m.lnFile.Close()
		return nil, err
	}
	m.runDir.Store(dir)
	return m, nil
}

// Addr is the public listener's address.
func (m *Master) Addr() net.Addr { return m.addr }

// RunDir is the private run directory, as it is now (see watchRunDir).
func (m *Master) RunDir() string {
	if d := m.runDir.Load(); d != nil {
		return d.path
	}
	return ""
}

// config is the running configuration.
func (m *Master) config() Config { return m.snapshot().cfg }

func (m *Master) nextID() uint64 { return m.ids.Add(1) }

// Run starts the workers and serves until ctx is done, then stops gracefully: every router
// stops accepting and finishes its requests (bounded by the shutdown timeout), then the
// routers stop their apps and exit. Use Kill from another goroutine to cut that short.
func (m *Master) Run(ctx context.Context) error {
	defer m.cleanup()
	defer m.endLife()
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
	c, err := m.newCluster(cfg)
	if err != nil {
		return err
	}
	m.logger.Info("olio starting", "listen", m.addr.String(), "workers", c.members, "key", cfg.Key,
		"pid", os.Getpid(), "run_dir", m.RunDir())
	if d := m.opts.UpgradeDrained; d != nil {
		if c.held {
			m.awaitDrained(d)
		} else {
			d.Close()
		}
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		m.loop(c, stop)
	}()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.watchRunDir()
	}()
	upgraded := false
	select {
	case <-ctx.Done():
	case <-m.handedOver:
		upgraded = true
		ops.closeMetrics() // the new master binds the address as soon as it is free
	}
	m.endLife() // /ready says 503; an operation in progress stops where it is
	if !upgraded {
		m.notify("STOPPING=1") // after a hot upgrade the service goes on: say nothing
		m.waitDrainDelay()
	}
	close(stop) // the loop drains and stops every worker once no operation runs
	<-stopped
	return nil
}

// Kill stops every router at once with SIGKILL (their apps follow by parent-death signal).
func (m *Master) Kill() {
	m.killOnce.Do(func() {
		if m.killed != nil {
			close(m.killed)
		}
	})
	for _, w := range m.snapshot().workers {
		if pid := w.sup.Status().Pid; pid > 0 {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
}

func (m *Master) cleanup() {
	m.wg.Wait()
	if d := m.runDir.Load(); d != nil {
		d.close()
	}
}

// workerReady notes that a router is ready: it asks the loop to check whether every member
// is (checkReady). It never waits, as it runs on a router's reader goroutine, whose
// answers an operation in progress may be waiting for.
func (m *Master) workerReady() {
	select {
	case m.readyNudge <- struct{}{}:
	default: // a nudge is waiting already: it checks this router too
	}
}

// checkReady, on the loop, logs once when every member is ready; then a hot upgrade's new
// master takes over from the old one.
func (m *Master) checkReady() {
	v := m.snapshot()
	if m.allReady.Load() || m.life.Err() != nil {
		return
	}
	for _, w := range v.workers[:v.members] {
		select {
		case <-w.ready:
		default:
			return
		}
	}
	if !m.allReady.CompareAndSwap(false, true) {
		return
	}
	n := v.members
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

// routerConfig is the Config message for worker index under cfg: the Verbatim settings as
// they are (copyToRouter), and what the router gets made from the Derived ones.
func (m *Master) routerConfig(cfg Config, index int) *descend.Config {
	path, args := m.exe, m.opts.DemoArgs
	if len(cfg.App) > 0 {
		path, args = cfg.App[0], cfg.App[1:]
	}
	cpu := -1
	if cfg.CPUAffinity {
		cpu = index
	}
	rc := &descend.Config{
		Index:           index,
		Secret:          m.secret,
		PublicAddr:      m.addr.String(),
		RunDir:          m.RunDir(),
		AppPath:         path,
		AppArgs:         args,
		AppDir:          cfg.AppDir,
		CPU:             cpu,
		AccessLog:       accessLogPath(cfg.AccessLog),
		AccessLogFormat: m.opts.LogFormat,
	}
	copyToRouter(&cfg, rc)
	return rc
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

// routerOutput is where a router's stdout and stderr go: whole lines into the log output.
func (m *Master) routerOutput() io.Writer {
	return &lineWriter{out: m.opts.LogOutput, mu: &m.outMu}
}

// callAll sends workers[i] the request msg(i), all at once, and waits for every answer. It
// returns the errors by worker (naming it), nil for a worker that answered or has no router.
func callAll(ctx context.Context, workers []*worker, msg func(i int) descend.Request) []error {
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
