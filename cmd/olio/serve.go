package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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
		Flags:  serveFlags(),
		Action: serve,
	}
}

// serveOnlyFlag is one of serve's flags that is not a setting of the master: where its
// configuration and its log go, which take effect before the config file is read. The help
// lists it after the setting named by after.
type serveOnlyFlag struct {
	after string
	flag  cli.Flag
}

// serveOnlyFlags are serve's flags that are not Settings, made anew for each command
// (urfave/cli keeps a parse's state in its flags).
func serveOnlyFlags() []serveOnlyFlag {
	return []serveOnlyFlag{
		{"secret-file", &cli.StringFlag{Name: "config", Usage: "JSON config `FILE` whose keys are these long flag names; flags override it; HUP re-reads it"}},
		{"access-log", &cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json (flag only, not in --config)"}},
		{"access-log", &cli.StringFlag{Name: "log-file", Usage: "append logs to `FILE` (reopened on USR1) instead of stderr (flag only, not in --config)"}},
		{"pidfile", &cli.BoolFlag{Name: strings.TrimPrefix(listener.UpgradeFlag, "--"), Hidden: true, Usage: "taking over from an old master (set by USR2, not by hand)"}},
	}
}

// serveFlags are serve's flags: one for each of listener.Settings, with its default from
// listener.DefaultConfig (the control socket's from defaultControl), and serveOnlyFlags.
func serveFlags() []cli.Flag {
	d := listener.DefaultConfig()
	d.Control = defaultControl()
	only := serveOnlyFlags()
	var flags []cli.Flag
	for i := range listener.Settings {
		s := &listener.Settings[i]
		flags = append(flags, settingFlag(s, s.Value(&d)))
		for _, f := range only {
			if f.after == s.Name {
				flags = append(flags, f.flag)
			}
		}
	}
	return flags
}

// settingFlag is the flag of setting s, whose default is v.
func settingFlag(s *listener.Setting, v any) cli.Flag {
	switch v := v.(type) {
	case string:
		return &cli.StringFlag{Name: s.Name, Value: v, DefaultText: s.DefaultText, EnvVars: s.EnvVars, Usage: s.Usage}
	case int:
		return &cli.IntFlag{Name: s.Name, Value: v, DefaultText: s.DefaultText, EnvVars: s.EnvVars, Usage: s.Usage}
	case time.Duration:
		return &cli.DurationFlag{Name: s.Name, Value: v, DefaultText: s.DefaultText, EnvVars: s.EnvVars, Usage: s.Usage}
	case bool:
		return &cli.BoolFlag{Name: s.Name, Value: v, DefaultText: s.DefaultText, EnvVars: s.EnvVars, Usage: s.Usage}
	}
	panic(fmt.Sprintf("olio: setting %s is a %T, which has no flag", s.Name, v))
}

// configFrom builds the master's Config from the flags, with the config file's values for
// the flags not given on the command line.
func configFrom(c *cli.Context) (listener.Config, error) {
	var file *configFile
	if path := c.String("config"); path != "" {
		var err error
		if file, err = readConfigFile(path); err != nil {
			return listener.Config{}, err
		}
	}
	var errs []error
	cfg := listener.Config{App: c.Args().Slice()}
	for i := range listener.Settings {
		s := &listener.Settings[i]
		if !file.sets(c, s.Name) {
			fromFlag(c, s.Name, s.Field(&cfg))
			continue
		}
		errs = append(errs, file.value(s.Name, s.Field(&cfg)))
		// Validation names the flag; say so when the value came from the file instead.
		cfg.Sources = sourced(cfg.Sources, s.Name, file.path)
	}
	if len(cfg.App) == 0 {
		app, err := file.app()
		errs = append(errs, err)
		if cfg.App = app; len(app) > 0 {
			cfg.Sources = sourced(cfg.Sources, "app", file.path)
		}
	}
	serveControl(c, &cfg)
	errs = append(errs, secretTwice(c, file, &cfg))
	for _, err := range errs {
		if err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// serveControl sets the control socket olio serve makes when its own --control does not
// name it: --control before serve, else $OLIO_CONTROL, else the config file's, else the
// default. The environment comes before the config file, as $OLIO_SECRET does.
func serveControl(c *cli.Context, cfg *listener.Config) {
	if c.IsSet("control") {
		return
	}
	p, from := controlOutside(c)
	if from == "" {
		return
	}
	cfg.Control = p
	delete(cfg.Sources, "control")
	if from == controlFromEnv {
		if cfg.Sources == nil {
			cfg.Sources = map[string]string{}
		}
		cfg.Sources["control"] = "$" + controlEnv
	}
}

// fromFlag sets *p, a Config field, to the value of the flag name.
func fromFlag(c *cli.Context, name string, p any) {
	switch p := p.(type) {
	case *string:
		*p = c.String(name)
	case *int:
		*p = c.Int(name)
	case *time.Duration:
		*p = c.Duration(name)
	case *bool:
		*p = c.Bool(name)
	}
}

// sourced is sources saying that name's value came from the config file at path.
func sourced(sources map[string]string, name, path string) map[string]string {
	if sources == nil {
		sources = map[string]string{}
	}
	sources[name] = "config file " + path
	return sources
}

// secretTwice refuses a secret given both directly (--secret, $OLIO_SECRET or the file's
// "secret") and by a file (--secret-file or the file's "secret-file"), naming both.
func secretTwice(c *cli.Context, file *configFile, cfg *listener.Config) error {
	if cfg.Secret == "" || cfg.SecretFile == "" {
		return nil
	}
	secret, secretFile := "--secret", "--secret-file"
	if v, ok := os.LookupEnv("OLIO_SECRET"); ok && v == c.String("secret") {
		secret = "$OLIO_SECRET"
	}
	if file.sets(c, "secret") {
		secret = fmt.Sprintf("%q in config file %s", "secret", file.path)
	}
	if file.sets(c, "secret-file") {
		secretFile = fmt.Sprintf("%q in config file %s", "secret-file", file.path)
	}
	return &configError{fmt.Sprintf("the secret is given twice, by %s and by %s; give only one", secret, secretFile)}
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
	var up upgradeFiles
	if c.Bool("upgrade") {
		if up, err = inheritUpgrade(&cfg); err != nil {
			return err
		}
	}
	m, err := listener.New(cfg, listener.Options{
		Listener:       up.listener,
		UpgradeReady:   up.ready,
		UpgradeDrained: up.drained,
		Running:        up.running,
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
	return runWithSignals(m, reopenLog(logFile, logger, c.String("log-file")))
}

// runWithSignals runs m until it has stopped, handing it the process's signals; reopen is
// what USR1 does to olio's own log.
func runWithSignals(m *listener.Master, reopen func() error) error {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	// os/signal drops a signal when the channel is full, and HandleSignals never blocks on
	// one, so 8 drop none; the kernel (and Go's runtime) still merge a signal sent again
	// before the first was delivered: quick TTINs may add fewer workers (olio scale +N).
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, listener.Signals...)
	defer signal.Stop(sigs)
	// Signals are handled until Run returns, not until the stop it starts: a second TERM
	// during the graceful stop must still reach HandleSignals, which then kills at once.
	handling, handled := context.WithCancel(context.Background())
	defer handled()
	go m.HandleSignals(handling, sigs, stop, reopen)
	return m.Run(ctx)
}

// reopenLog reopens olio's log file at path after logrotate moved it (USR1); with no log
// file (logging to stderr) it does nothing.
func reopenLog(f *listener.LogFile, logger *slog.Logger, path string) func() error {
	return func() error {
		if f == nil {
			return nil
		}
		if err := f.Reopen(); err != nil {
			return err
		}
		logger.Info("log file reopened", "path", path) // the first line of the new file
		return nil
	}
}

// upgradeFiles are what an old master hands the new one on USR2 (olio serve --upgrade).
type upgradeFiles struct {
	listener *os.File           // the public listening socket
	ready    *os.File           // the new master says it is ready here
	drained  *os.File           // the old master says it has drained here; nil from an older olio
	running  *listener.Handover // the old master's running state: its worker counts
}

// inheritUpgrade takes over from an old master: the files it handed down, its secret, which
// it sets in cfg, and its running state (worker counts).
func inheritUpgrade(cfg *listener.Config) (upgradeFiles, error) {
	var up upgradeFiles
	var state *os.File
	for _, fd := range []struct {
		f    **os.File
		n    int
		name string
	}{
		{&up.listener, listener.UpgradeListenerFD, "listener"},
		{&up.ready, listener.UpgradeReadyFD, "upgrade-ready"},
		{&state, listener.UpgradeStateFD, "upgrade-state"},
	} {
		var err error
		if *fd.f, err = inherit(fd.n, fd.name); err != nil {
			return up, fmt.Errorf("%w: --upgrade is set by olio itself on USR2; do not pass it by hand", err)
		}
	}
	// An old master that waits for the new one's ready and then drains says when it
	// has drained (exclusive hand-over); one from an older olio passes no such pipe.
	up.drained, _ = inheritPipe(listener.UpgradeDrainedFD, "upgrade-drained")
	h, err := listener.ReadHandover(state)
	state.Close()
	if err != nil {
		return up, err
	}
	cfg.Secret = h.Secret
	up.running = &h
	return up, nil
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
