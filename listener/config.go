package listener

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router"
)

// Config is everything the master needs. The zero value is not useful; start from
// DefaultConfig.
type Config struct {
	Listen          string        // public address, host:port
	Workers         int           // number of workers
	Key             string        // key spec, see router.ParseKeySpec
	Secret          string        // shared secret; empty: SecretFile, else random
	SecretFile      string        // file holding the secret
	App             []string      // the app's command line; empty: the built-in demo
	AppDir          string        // the app's working directory; empty: olio's
	ReadyMode       string        // "port" or "notify"
	ReadyTimeout    time.Duration // bound on an app becoming ready
	ForwardTimeout  time.Duration // how long a request waits for its owner
	RequestTimeout  time.Duration // bound on one request to the app
	ShutdownTimeout time.Duration // bound on graceful stop and drain
	MaxHeaderBytes  int           // request header limit
	HeaderTimeout   time.Duration // bound on reading a client's request header
	BodyTimeout     time.Duration // bound on a client's body and on each write to it, 0: off
	IdleTimeout     time.Duration // closes a client's keep-alive connection idle this long
	MaxConns        int           // concurrent connections per router, 0: unlimited
	HealthTimeout   time.Duration // recycle an app that fails health probes this long, 0: off
	CPUAffinity     bool          // pin worker i to CPU i mod NumCPU
	Handoff         bool          // pass a connection to its owner when its first request is the owner's
	Embedded        bool          // App is the router (a Go program calling router.Serve); no app child
	Handover        string        // "exclusive" (a key is never served by two processes at once) or "overlap"
	HandoverPath    string        // POST a hand-over notice to the app at this path, "": none
	KeyStats        string        // hot-key counting for olio keys: on, hashed or off
	Control         string        // control socket path
	Metrics         string        // Prometheus address, empty: off
	PIDFile         string        // pidfile path, empty: none
	RunDir          string        // parent of the private run directory, empty: os.TempDir
	ClusterAddr     string        // the front's host:port, given to apps as OLIO_CLUSTER_ADDR; empty: none
	DrainDelay      time.Duration // on stop, how long /ready says 503 before the drain begins
	AccessLog       string        // access log file, "-": stdout, "": none

	// Sources says where values came from when not from the command line, by long flag
	// name: "workers" → "config file /etc/olio.json". Validation messages name it, so that
	// a bad value in a file is not blamed on a flag nobody gave. Nil: say nothing.
	Sources map[string]string
}

// DefaultConfig returns the defaults: one worker per CPU on 127.0.0.1:8080.
func DefaultConfig() Config {
	return Config{
		Listen:          "127.0.0.1:8080",
		Workers:         runtime.NumCPU(),
		Key:             "header:X-Olio-Key",
		ReadyMode:       router.ReadyPort,
		ReadyTimeout:    60 * time.Second,
		ForwardTimeout:  10 * time.Second,
		RequestTimeout:  60 * time.Second,
		ShutdownTimeout: 30 * time.Second,
		MaxHeaderBytes:  1 << 20,
		HeaderTimeout:   10 * time.Second,
		BodyTimeout:     30 * time.Second,
		IdleTimeout:     2 * time.Minute,
		Handoff:         true,
		Handover:        router.HandoverExclusive,
		KeyStats:        descend.KeyStatsOn,
	}
}

// MaxWorkers bounds --workers: each worker is two processes and a mesh of sessions.
const MaxWorkers = 1024

// Validate reports the first invalid value, saying what is wrong and how to fix it.
func (c *Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	if err := validListen(c.Listen); err != nil {
		return bad("--listen %q%s: %v", c.Listen, c.from("listen"), err)
	}
	if c.Workers < 1 || c.Workers > MaxWorkers {
		return bad("--workers %d%s: must be from 1 to %d", c.Workers, c.from("workers"), MaxWorkers)
	}
	if _, err := router.ParseKeySpec(c.Key); err != nil {
		return bad("%v%s", err, c.from("key"))
	}
	if c.ReadyMode != router.ReadyPort && c.ReadyMode != router.ReadyNotify {
		return bad("--ready %q%s: use port (the app accepts on $PORT) or notify (the app sends READY=1 to $NOTIFY_SOCKET)", c.ReadyMode, c.from("ready"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"ready-timeout", c.ReadyTimeout}, {"forward-timeout", c.ForwardTimeout},
		{"shutdown-timeout", c.ShutdownTimeout}, {"header-timeout", c.HeaderTimeout},
		{"idle-timeout", c.IdleTimeout},
	} {
		if d.v <= 0 {
			return bad("--%s %s%s: must be positive, e.g. 10s", d.name, d.v, c.from(d.name))
		}
	}
	if c.RequestTimeout < 0 || c.HealthTimeout < 0 || c.BodyTimeout < 0 {
		return bad("--request-timeout, --health-timeout and --body-timeout must not be negative (0 turns them off)")
	}
	if c.MaxHeaderBytes < 1024 {
		return bad("--max-header-bytes %d%s: must be at least 1024", c.MaxHeaderBytes, c.from("max-header-bytes"))
	}
	if c.Handover != router.HandoverExclusive && c.Handover != router.HandoverOverlap {
		return bad("--handover %q%s: use exclusive (a key is never served by two processes at once; moving keys pause) or overlap (no pause; old and new owner may overlap briefly)", c.Handover, c.from("handover"))
	}
	if c.HandoverPath != "" && !strings.HasPrefix(c.HandoverPath, "/") {
		return bad("--handover-path %q%s: give a path that starts with /, e.g. /olio/handover", c.HandoverPath, c.from("handover-path"))
	}
	switch c.KeyStats {
	case descend.KeyStatsOn, descend.KeyStatsHashed, descend.KeyStatsOff:
	default:
		return bad("--key-stats %q%s: use on (olio keys shows keys), hashed (it shows a digest of each) or off (nothing is counted)", c.KeyStats, c.from("key-stats"))
	}
	if c.ClusterAddr != "" {
		if err := validClusterAddr(c.ClusterAddr); err != nil {
			return bad("--cluster-addr %q%s: %v", c.ClusterAddr, c.from("cluster-addr"), err)
		}
	}
	if c.DrainDelay < 0 {
		return bad("--drain-delay %s%s: must not be negative (0: drain at once)", c.DrainDelay, c.from("drain-delay"))
	}
	if c.AccessLog != "" {
		if err := validAccessLog(c.AccessLog); err != nil {
			return bad("--access-log %q%s: %v", c.AccessLog, c.from("access-log"), err)
		}
	}
	if c.MaxConns < 0 {
		return bad("--max-conns %d%s: must be 0 (unlimited) or more", c.MaxConns, c.from("max-conns"))
	}
	if c.Secret != "" {
		if err := checkSecret(c.Secret, "--secret (or $OLIO_SECRET)"+c.from("secret")); err != nil {
			return err
		}
	}
	if len(c.App) > 0 {
		path, err := exec.LookPath(c.App[0])
		if err != nil {
			return bad("app %q%s cannot be run: %v; give the path of an executable after --", c.App[0], c.from("app"), unwrapExec(err))
		}
		if err := checkExecutable(c.App[0]+c.from("app"), path); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	return nil
}

// from is " (from SOURCE)" when Sources names where the value of flag came from, else "".
func (c *Config) from(flag string) string {
	if src := c.Sources[flag]; src != "" {
		return " (from " + src + ")"
	}
	return ""
}

// validListen checks a public address: host:port, where an empty host means every
// interface. An empty address would bind every interface on a random port.
func validListen(addr string) error {
	if addr == "" {
		return errors.New("give host:port, e.g. 127.0.0.1:8080 (or :8080 for every interface)")
	}
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return errors.New("not host:port; give e.g. 127.0.0.1:8080 (or :8080 for every interface)")
	}
	return nil
}

// validClusterAddr checks the front's address: host:port with both parts, as an app would
// dial it (no scheme, no path).
func validClusterAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return errors.New("not host:port; give the front's address as apps dial it, e.g. olio.internal:80 (no http://, no path)")
	}
	return nil
}

// validAccessLog checks the access log's destination: stdout open, or a file olio can
// append to (created with mode 0600 when missing; logrotate may remove it later).
func validAccessLog(path string) error {
	if path == "-" {
		if _, err := os.Stdout.Stat(); err != nil {
			return errors.New("stdout is closed; give a file path instead")
		}
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("cannot append to it (%v); give a writable file path, or - for stdout", unwrapPath(err))
	}
	return f.Close()
}

// unwrapExec drops os/exec's "exec: " prefix layers for a one-line message.
func unwrapExec(err error) error {
	if e, ok := err.(*exec.Error); ok {
		return e.Err
	}
	return err
}
