package listener

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/olio-dev/olio/router/keys"
)

// Config is everything the master needs. The zero value is not useful; start from
// DefaultConfig. Each field an operator sets (all but App, AppDir, RunDir and Sources) is
// declared, with its flag, default, check and reload answer, in Settings.
type Config struct {
	Listen          string        // public address, host:port
	Workers         int           // number of workers
	Key             string        // key spec, see keys.Parse
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
	UpgradeGrace    time.Duration // exclusive hand-over: how long an upgraded connection of a moving key lives on after the notice
	KeyStats        string        // hot-key counting for olio keys: on, hashed or off
	Control         string        // control socket path
	Metrics         string        // Prometheus address, empty: off
	PIDFile         string        // pidfile path, empty: none
	RunDir          string        // parent of the private run directory, empty: os.TempDir
	ClusterAddr     string        // the front's host:port, given to apps as OLIO_CLUSTER_ADDR; empty: none
	DrainDelay      time.Duration // on stop, how long /ready says 503 before the drain begins
	AccessLog       string        // access log file, "-": stdout, "": none

	// ForwardedAllowIPs lists the fronts whose X-Forwarded-* and Forwarded pass
	// (process.ParseForwardedAllowIPs); "": none.
	ForwardedAllowIPs string

	// Sources says where values came from when not from the command line, by long flag
	// name: "workers" → "config file /etc/olio.json". Validation messages name it, so that
	// a bad value in a file is not blamed on a flag nobody gave. Nil: say nothing.
	Sources map[string]string
}

// DefaultConfig returns the defaults, as Settings declares them: one worker per CPU on
// 127.0.0.1:8080.
func DefaultConfig() Config {
	var c Config
	for i := range Settings {
		if s := &Settings[i]; s.Default != nil {
			reflect.ValueOf(s.Field(&c)).Elem().Set(reflect.ValueOf(s.Default))
		}
	}
	return c
}

// MaxWorkers bounds --workers: each worker is two processes and a mesh of sessions.
const MaxWorkers = 1024

// Validate reports the first invalid value, saying what is wrong and how to fix it.
func (c *Config) Validate() error {
	for i := range Settings {
		if err := Settings[i].Check(c, &Settings[i]); err != nil {
			return err
		}
	}
	if len(c.App) > 0 {
		path, err := exec.LookPath(c.App[0])
		if err != nil {
			return fmt.Errorf("%w: app %q%s cannot be run: %v; give the path of an executable after --", ErrConfig, c.App[0], c.from("app"), unwrapExec(err))
		}
		if err := checkExecutable(c.App[0]+c.from("app"), path); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	return nil
}

// The checks of Settings. Each reports what is wrong with its setting's value, saying how
// to fix it.

// anyValue takes any value of the setting's kind.
func anyValue(*Config, *Setting) error { return nil }

// positive checks a duration that must be more than 0.
func positive(c *Config, s *Setting) error {
	if s.Value(c).(time.Duration) <= 0 {
		return s.bad(c, "must be positive, e.g. 10s")
	}
	return nil
}

// defaultUpgradeGrace marks --upgrade-grace as not given: graceBelowForward makes it 2s, or
// half of --forward-timeout when that is 4s or less, so that a short --forward-timeout alone
// is never refused for a grace nobody asked for.
const defaultUpgradeGrace = time.Duration(-1)

// graceBelowForward checks --upgrade-grace: not negative, and below --forward-timeout, the
// bound of the requests held meanwhile (else every one of them would get 503). It resolves
// the default (defaultUpgradeGrace) first.
func graceBelowForward(c *Config, s *Setting) error {
	if c.UpgradeGrace == defaultUpgradeGrace {
		c.UpgradeGrace = min(2*time.Second, c.ForwardTimeout/2)
	}
	g := s.Value(c).(time.Duration)
	if g < 0 {
		return s.bad(c, "must not be negative (0 ends the connections at once)")
	}
	if g >= c.ForwardTimeout {
		return s.bad(c, fmt.Sprintf("must be below --forward-timeout (%s), which bounds the requests held meanwhile: lower it or raise --forward-timeout", c.ForwardTimeout))
	}
	return nil
}

// offOrPositive checks a duration where 0 turns something off.
func offOrPositive(c *Config, s *Setting) error {
	if s.Value(c).(time.Duration) < 0 {
		return fmt.Errorf("%w: --request-timeout, --health-timeout and --body-timeout must not be negative (0 turns them off)", ErrConfig)
	}
	return nil
}

// notNegative checks a number or duration that must not be below 0.
func notNegative(problem string) func(*Config, *Setting) error {
	return func(c *Config, s *Setting) error {
		if reflect.ValueOf(s.Value(c)).Int() < 0 {
			return s.bad(c, problem)
		}
		return nil
	}
}

// between checks a number from least to most.
func between(least, most int) func(*Config, *Setting) error {
	return func(c *Config, s *Setting) error {
		if n := s.Value(c).(int); n < least || n > most {
			return s.bad(c, fmt.Sprintf("must be from %d to %d", least, most))
		}
		return nil
	}
}

// atLeast checks a number of least or more.
func atLeast(least int) func(*Config, *Setting) error {
	return func(c *Config, s *Setting) error {
		if s.Value(c).(int) < least {
			return s.bad(c, fmt.Sprintf("must be at least %d", least))
		}
		return nil
	}
}

// oneOf checks a word that must be one of words; problem says which, and what each means.
func oneOf(problem string, words ...string) func(*Config, *Setting) error {
	return func(c *Config, s *Setting) error {
		if !slices.Contains(words, s.Value(c).(string)) {
			return s.bad(c, problem)
		}
		return nil
	}
}

// checkWith checks a string with valid.
func checkWith(valid func(string) error) func(*Config, *Setting) error {
	return func(c *Config, s *Setting) error {
		if err := valid(s.Value(c).(string)); err != nil {
			return s.bad(c, err.Error())
		}
		return nil
	}
}

// checkKey checks the key spec; keys.Parse's error names the flag.
func checkKey(c *Config, s *Setting) error {
	if _, err := keys.Parse(c.Key); err != nil {
		return fmt.Errorf("%w: %v%s", ErrConfig, err, c.from(s.Name))
	}
	return nil
}

// checkSecretSetting checks a secret given with --secret, $OLIO_SECRET or the config file,
// never quoting it.
func checkSecretSetting(c *Config, s *Setting) error {
	if c.Secret == "" {
		return nil
	}
	return checkSecret(c.Secret, "--secret (or $OLIO_SECRET)"+c.from(s.Name))
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

// validHandoverPath checks the path the app is sent hand-over notices at; "": none.
func validHandoverPath(path string) error {
	if path != "" && !strings.HasPrefix(path, "/") {
		return errors.New("give a path that starts with /, e.g. /olio/handover")
	}
	return nil
}

// validClusterAddr checks the front's address: host:port with both parts, as an app would
// dial it (no scheme, no path); "": none.
func validClusterAddr(addr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return errors.New("not host:port; give the front's address as apps dial it, e.g. olio.internal:80 (no http://, no path)")
	}
	return nil
}

// validAccessLog checks the access log's destination: stdout open, or a file olio can
// append to (created with mode 0600 when missing; logrotate may remove it later); "": none.
func validAccessLog(path string) error {
	switch path {
	case "":
		return nil
	case "-":
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
