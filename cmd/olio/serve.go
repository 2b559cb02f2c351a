package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/olio-dev/olio/listener"
)

func serveCommand() *cli.Command {
	d := listener.DefaultConfig()
	return &cli.Command{
		Name:      "serve",
		Usage:     "run a cluster of workers of APP (the built-in demo app when none is given)",
		ArgsUsage: "[-- APP [ARGS...]]",
		Description: `olio binds --listen once and starts --workers routers that share the socket. Each
router starts its own copy of APP with PORT (a private loopback port), OLIO_INDEX,
OLIO_WORKERS, OLIO_SECRET, OLIO_ADDR and OLIO_CLUSTER_ADDR in its environment, and routes every request
to the worker that owns its key: jump(xxhash64(key), workers). With --embedded, APP is
a Go program that calls router.Serve(handler) and is itself each worker's router.

Signals: TERM/INT/QUIT stop gracefully (after --drain-delay, during which /ready on
--metrics answers 503; a second one stops at once), HUP reloads the
config file and restarts every app worker by worker, TTIN/TTOU add/remove a worker,
WINCH scales to zero, USR1 reopens the log files, USR2 upgrades olio in place.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: d.Listen, Usage: "public `ADDR` to bind (host:port)"},
			&cli.IntFlag{Name: "workers", Value: d.Workers, DefaultText: "one per CPU", Usage: "number of workers"},
			&cli.StringFlag{Name: "key", Value: d.Key, Usage: "where a request's key is: header:NAME, query:NAME, cookie:NAME, path:N, path or host"},
			&cli.StringFlag{Name: "secret", EnvVars: []string{"OLIO_SECRET"}, DefaultText: "32 random bytes", Usage: "secret for X-Olio-Secret"},
			&cli.StringFlag{Name: "secret-file", Usage: "read the secret from `FILE` (instead of --secret or $OLIO_SECRET, not with them)"},
			&cli.StringFlag{Name: "config", Usage: "JSON config `FILE` whose keys are these long flag names; flags override it; HUP re-reads it"},
			&cli.StringFlag{Name: "ready", Value: d.ReadyMode, Usage: "when an app is ready: port (it accepts on $PORT) or notify (it sends READY=1 to $NOTIFY_SOCKET)"},
			&cli.DurationFlag{Name: "ready-timeout", Value: d.ReadyTimeout, Usage: "how long an app may take to become ready"},
			&cli.DurationFlag{Name: "forward-timeout", Value: d.ForwardTimeout, Usage: "how long a request waits for its owner to be ready before 503"},
			&cli.DurationFlag{Name: "request-timeout", Value: d.RequestTimeout, Usage: "how long the app may take to answer before 504 (0: no limit)"},
			&cli.DurationFlag{Name: "shutdown-timeout", Value: d.ShutdownTimeout, Usage: "how long in-flight requests may take to finish on stop, drain and restart"},
			&cli.IntFlag{Name: "max-header-bytes", Value: d.MaxHeaderBytes, Usage: "largest request header accepted (431 above)"},
			&cli.DurationFlag{Name: "header-timeout", Value: d.HeaderTimeout, Usage: "how long a client may take to send a request's header (slow-loris bound)"},
			&cli.DurationFlag{Name: "body-timeout", Value: d.BodyTimeout, Usage: "how long a client may take to send a request's body (plus a second per 64 KiB received), and to take each write of its answer; then 408 or the connection is closed (0: no bound)"},
			&cli.DurationFlag{Name: "idle-timeout", Value: d.IdleTimeout, Usage: "close a client's keep-alive connection idle this long"},
			&cli.IntFlag{Name: "max-conns", Value: d.MaxConns, Usage: "concurrent connections per router (0: unlimited)"},
			&cli.DurationFlag{Name: "health-timeout", Value: d.HealthTimeout, Usage: "recycle an app that stops accepting connections for this long (0: off)"},
			&cli.BoolFlag{Name: "handoff", Value: d.Handoff, Usage: "pass a connection to the worker that owns its first request's key, so later requests on it need no hop; --handoff=false forwards instead"},
			&cli.StringFlag{Name: "handover", Value: d.Handover, Usage: "exclusive: a key is never served by two processes at once (moving keys pause while their old owner finishes); overlap: no pause, old and new owner may overlap briefly"},
			&cli.StringFlag{Name: "handover-path", Usage: "POST a JSON hand-over notice to the app at `PATH` before keys leave it (scale, restart)"},
			&cli.BoolFlag{Name: "embedded", Usage: "APP is a Go program that calls router.Serve(handler): it runs as each worker's router and serves its own keys in-process (no app child; the built-in demo without APP)"},
			&cli.StringFlag{Name: "key-stats", Value: d.KeyStats, Usage: "count each worker's hottest keys for olio keys and olio scale --dry-run: on, hashed (olio keys shows a digest of each key, not the key) or off"},
			&cli.BoolFlag{Name: "cpu-affinity", Usage: "pin worker i (router and app) to CPU i mod the number of CPUs"},
			&cli.StringFlag{Name: "control", Value: defaultControl(), Usage: "control socket `PATH` for olio status/reload/scale/stop"},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics at /metrics and a load balancer's readiness check at /ready on `ADDR` (e.g. 127.0.0.1:9090)"},
			&cli.StringFlag{Name: "cluster-addr", Usage: "the `HOST:PORT` of the front (load balancer) that hashes keys to hosts, given to apps as OLIO_CLUSTER_ADDR"},
			&cli.DurationFlag{Name: "drain-delay", Value: d.DrainDelay, Usage: "on stop, answer 503 on /ready and keep serving this long before draining, so the front takes this host out first"},
			&cli.StringFlag{Name: "access-log", Usage: "write one line per request (route, worker, key, durations) to `FILE` (reopened on USR1), or - for stdout; in --log-format"},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json (flag only, not in --config)"},
			&cli.StringFlag{Name: "log-file", Usage: "append logs to `FILE` (reopened on USR1) instead of stderr (flag only, not in --config)"},
			&cli.StringFlag{Name: "pidfile", Usage: "write the master's pid to `FILE`"},
			&cli.BoolFlag{Name: strings.TrimPrefix(listener.UpgradeFlag, "--"), Hidden: true, Usage: "taking over from an old master (set by USR2, not by hand)"},
		},
		Action: serve,
	}
}

// configFrom builds the master's Config from the flags, with the config file's values for
// the flags not given on the command line.
func configFrom(c *cli.Context) (listener.Config, error) {
	var file *configFile
	if path := c.String("config"); path != "" {
		var err error
		if file, err = readConfigFile(path, func(k string) bool { return isServeFlag(c, k) }); err != nil {
			return listener.Config{}, err
		}
	}
	// fromFile says whether name's value comes from the file: there, and not given as a flag.
	fromFile := func(name string) bool {
		_, ok := file.raw(name)
		return ok && !c.IsSet(name)
	}
	var firstErr error
	keep := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	str := func(name string) string {
		if fromFile(name) {
			v, err := file.str(name)
			keep(err)
			return v
		}
		return c.String(name)
	}
	num := func(name string) int {
		if fromFile(name) {
			v, err := file.num(name)
			keep(err)
			return v
		}
		return c.Int(name)
	}
	dur := func(name string) time.Duration {
		if fromFile(name) {
			v, err := file.dur(name)
			keep(err)
			return v
		}
		return c.Duration(name)
	}
	boolean := func(name string) bool {
		if fromFile(name) {
			v, err := file.boolean(name)
			keep(err)
			return v
		}
		return c.Bool(name)
	}
	cfg := listener.Config{
		Listen:          str("listen"),
		Workers:         num("workers"),
		Key:             str("key"),
		Secret:          str("secret"),
		SecretFile:      str("secret-file"),
		ReadyMode:       str("ready"),
		ReadyTimeout:    dur("ready-timeout"),
		ForwardTimeout:  dur("forward-timeout"),
		RequestTimeout:  dur("request-timeout"),
		ShutdownTimeout: dur("shutdown-timeout"),
		MaxHeaderBytes:  num("max-header-bytes"),
		HeaderTimeout:   dur("header-timeout"),
		BodyTimeout:     dur("body-timeout"),
		IdleTimeout:     dur("idle-timeout"),
		MaxConns:        num("max-conns"),
		HealthTimeout:   dur("health-timeout"),
		CPUAffinity:     boolean("cpu-affinity"),
		Handoff:         boolean("handoff"),
		Embedded:        boolean("embedded"),
		Handover:        str("handover"),
		HandoverPath:    str("handover-path"),
		KeyStats:        str("key-stats"),
		Control:         str("control"),
		Metrics:         str("metrics"),
		PIDFile:         str("pidfile"),
		ClusterAddr:     str("cluster-addr"),
		DrainDelay:      dur("drain-delay"),
		AccessLog:       str("access-log"),
		App:             c.Args().Slice(),
	}
	if len(cfg.App) == 0 {
		app, err := file.app()
		keep(err)
		cfg.App = app
		if len(app) > 0 {
			cfg.Sources = map[string]string{"app": "config file " + file.path}
		}
	}
	// Validation names the flag; say so when the value came from the file instead.
	for _, f := range c.Command.Flags {
		if name := f.Names()[0]; fromFile(name) {
			if cfg.Sources == nil {
				cfg.Sources = map[string]string{}
			}
			cfg.Sources[name] = "config file " + file.path
		}
	}
	if cfg.Secret != "" && cfg.SecretFile != "" {
		secret, secretFile := "--secret", "--secret-file"
		if v, ok := os.LookupEnv("OLIO_SECRET"); ok && v == c.String("secret") {
			secret = "$OLIO_SECRET"
		}
		if fromFile("secret") {
			secret = fmt.Sprintf("%q in config file %s", "secret", file.path)
		}
		if fromFile("secret-file") {
			secretFile = fmt.Sprintf("%q in config file %s", "secret-file", file.path)
		}
		keep(&configError{fmt.Sprintf("the secret is given twice, by %s and by %s; give only one", secret, secretFile)})
	}
	return cfg, firstErr
}

// isServeFlag says whether name is one of serve's long flag names that a config file may
// set: not the hidden ones, nor help.
func isServeFlag(c *cli.Context, name string) bool {
	for _, f := range c.Command.Flags {
		if f == cli.HelpFlag {
			continue
		}
		if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
			continue
		}
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// secretOnCommandLine reports whether --secret is among serve's own arguments (not from
// $OLIO_SECRET, nor from a config file, nor after "--" where the app's arguments are).
func secretOnCommandLine(c *cli.Context) bool {
	for _, a := range c.Lineage()[1].Args().Tail() {
		if a == "--" {
			return false
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "secret" {
			return true
		}
	}
	return false
}

// checkAppArgs refuses an olio flag after APP when no "--" comes before APP: urfave/cli
// stops reading flags at APP, so the flag would silently go to the app rather than to olio.
func checkAppArgs(c *cli.Context) error {
	app := c.Args().Slice()
	raw := c.Lineage()[1].Args().Tail() // serve's arguments as given
	if len(app) == 0 || (len(raw) > len(app) && raw[len(raw)-len(app)-1] == "--") {
		return nil
	}
	for _, a := range app[1:] {
		if len(a) < 2 || a[0] != '-' || a == "--" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		if lookupFlag(c.Command.Flags, name) != nil {
			return badUsage("%s after the app %q would go to the app, not to olio; put olio's flags first and the app after --: olio serve [FLAGS] -- APP [ARGS...]", dashed(name), app[0])
		}
	}
	return nil
}

func serve(c *cli.Context) error {
	surviveClosedOutput()
	if err := checkAppArgs(c); err != nil {
		return err
	}
	// Everything that can be wrong with the command line is found before the log file is
	// created.
	newLog, err := loggerFor(c.String("log-format"))
	if err != nil {
		return err
	}
	cfg, err := configFrom(c)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := checkControlDir(cfg.Control, true); err != nil {
		return err
	}
	var out io.Writer = os.Stderr
	var logFile *listener.LogFile
	if path := c.String("log-file"); path != "" {
		if logFile, err = listener.OpenLogFile(path); err != nil {
			return err
		}
		defer logFile.Close()
		out = logFile
	}
	logger := newLog(out)
	if secretOnCommandLine(c) {
		logger.Warn("the secret was given with --secret: every local user can read it in olio's command line (ps, /proc/PID/cmdline); give it with --secret-file or $OLIO_SECRET instead")
	}
	var inherited, upgradeReady, upgradeDrained *os.File
	if c.Bool("upgrade") {
		var state *os.File
		for _, fd := range []struct {
			f    **os.File
			n    int
			name string
		}{
			{&inherited, listener.UpgradeListenerFD, "listener"},
			{&upgradeReady, listener.UpgradeReadyFD, "upgrade-ready"},
			{&state, listener.UpgradeStateFD, "upgrade-state"},
		} {
			if *fd.f, err = inherit(fd.n, fd.name); err != nil {
				return fmt.Errorf("%w: --upgrade is set by olio itself on USR2; do not pass it by hand", err)
			}
		}
		// An old master that waits for the new one's ready and then drains says when it
		// has drained (exclusive hand-over); one from an older olio passes no such pipe.
		upgradeDrained, _ = inheritPipe(listener.UpgradeDrainedFD, "upgrade-drained")
		h, err := listener.ReadHandover(state)
		state.Close()
		if err != nil {
			return err
		}
		cfg.Secret = h.Secret
		if h.Workers > 0 {
			cfg.Workers = h.Workers
		}
	}
	m, err := listener.New(cfg, listener.Options{
		Listener:       inherited,
		UpgradeReady:   upgradeReady,
		UpgradeDrained: upgradeDrained,
		Args:           os.Args[1:],
		Logger:         logger,
		LogOutput:      out,
		LogFormat:      c.String("log-format"),
		DemoArgs:       []string{"demo"},
		Reload:         func() (listener.Config, error) { return configFrom(c) },
		Notify:         listener.SystemdNotifier(logger),
	})
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, listener.Signals...)
	defer signal.Stop(sigs)
	// Signals are handled until Run returns, not until the stop it starts: a second TERM
	// during the graceful stop must still reach HandleSignals, which then kills at once.
	handling, handled := context.WithCancel(context.Background())
	defer handled()
	go m.HandleSignals(handling, sigs, stop, func() error {
		if logFile == nil {
			return nil
		}
		if err := logFile.Reopen(); err != nil {
			return err
		}
		logger.Info("log file reopened", "path", c.String("log-file")) // the first line of the new file
		return nil
	})
	return m.Run(ctx)
}

// defaultControl is where olio serve listens for control commands and where olio status
// looks, so the two find each other with no flags: in $XDG_RUNTIME_DIR, else in a directory
// of the user's own in $TMPDIR (see checkControlDir).
func defaultControl() string {
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "olio.sock")
	}
	return filepath.Join(os.TempDir(), "olio-"+strconv.Itoa(os.Getuid()), "olio.sock")
}

// checkControlDir checks, when path is the default control socket, that its directory is
// private to this user (listener.PrivateDir), making it first when create is set (olio
// serve) and it is not $XDG_RUNTIME_DIR. In a shared /tmp another user could otherwise put
// something at the path first: a file that stops olio serve, or an olio of their own that
// would receive this user's commands. A path given with --control is the user's choice
// and is not checked (the client's peer check still applies).
func checkControlDir(path string, create bool) error {
	if path != defaultControl() {
		return nil
	}
	dir := filepath.Dir(path)
	return listener.PrivateDir(dir, create && os.Getenv("XDG_RUNTIME_DIR") == "")
}
