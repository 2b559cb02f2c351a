package listener

import (
	"fmt"
	"reflect"
	"runtime"
	"strconv"
	"time"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router/process"
)

// Setting is one of olio serve's settings, declared once in Settings: the flag, the config
// file's key, the default, the check, what a reload does with it and whether it reaches
// the routers all come from its entry.
type Setting struct {
	Name        string   // the long flag name, also the config file's key
	Usage       string   // the flag's help; a `WORD` in backquotes names its value
	DefaultText string   // what the help shows as the default, when not the value itself
	EnvVars     []string // environment variables that set it, when no flag does

	// Field points into a Config at the setting's field: a *string, *int, *bool or
	// *time.Duration, which is also the flag's kind.
	Field func(*Config) any
	// Default is the field's value in DefaultConfig, of the field's type; nil: the zero value.
	Default any
	// Check reports what is wrong with the setting's value in c, nil: nothing. Every
	// setting has one; anyValue for those that take any value of their kind (or are checked
	// when used, like the secret file and the sockets).
	Check func(c *Config, s *Setting) error

	Reload Reload // what a reload does with a new value
	Router Route  // whether and how the value reaches each router (descend.Config)
	Secret bool   // never shown: not in a log line, nor in a reload's answer
}

// Reload says what a reload (HUP, olio reload) does with a setting's new value.
type Reload int

// What a reload does with a setting. Every Setting says one of these.
const (
	_              Reload = iota
	Applied               // it takes effect: on new requests at once, on apps from their next start
	AppliedLater          // it is taken, but each router reads it when it starts (kill, crash, USR2)
	KeptForUpgrade        // the running value stays; a restart or a hot upgrade (USR2) applies it
	KeptForRestart        // the running value stays; only a restart applies it
)

// Route says whether and how a setting reaches each router.
type Route int

// How a setting reaches a router.
const (
	MasterOnly Route = iota // the master uses it; the routers do not see it
	// Verbatim: descend.Config has a field of the same name and type, and the value is
	// copied into it as it is (copyToRouter): declaring the setting is all it takes.
	Verbatim
	Derived // the router gets a value made from it (routerConfig: the CPU, the bound address, …)
)

// Settings are olio serve's settings, in the order of its help.
var Settings = []Setting{
	{Name: "listen", Field: func(c *Config) any { return &c.Listen }, Default: "127.0.0.1:8080",
		Usage: "public `ADDR` to bind (host:port)",
		Check: checkWith(validListen), Reload: KeptForRestart, Router: Derived},
	{Name: "workers", Field: func(c *Config) any { return &c.Workers }, Default: runtime.NumCPU(), DefaultText: "one per CPU",
		Usage: "number of workers",
		Check: between(1, MaxWorkers), Reload: Applied},
	{Name: "key", Field: func(c *Config) any { return &c.Key }, Default: "header:X-Olio-Key",
		Usage: "where a request's key is: header:NAME, query:NAME, cookie:NAME, path:N, path or host",
		Check: checkKey, Reload: Applied, Router: Verbatim},
	{Name: "secret", Field: func(c *Config) any { return &c.Secret }, EnvVars: []string{"OLIO_SECRET"}, DefaultText: "32 random bytes",
		Usage: "secret for X-Olio-Secret",
		Check: checkSecretSetting, Reload: KeptForRestart, Router: Derived, Secret: true},
	{Name: "secret-file", Field: func(c *Config) any { return &c.SecretFile },
		Usage: "read the secret from `FILE` (instead of --secret or $OLIO_SECRET, not with them)",
		Check: anyValue, Reload: KeptForRestart, Router: Derived, Secret: true},
	{Name: "ready", Field: func(c *Config) any { return &c.ReadyMode }, Default: process.ReadyPort,
		Usage:  "when an app is ready: port (it accepts on $PORT) or notify (it sends READY=1 to $NOTIFY_SOCKET)",
		Check:  oneOf("use port (the app accepts on $PORT) or notify (the app sends READY=1 to $NOTIFY_SOCKET)", process.ReadyPort, process.ReadyNotify),
		Reload: Applied, Router: Verbatim},
	{Name: "ready-timeout", Field: func(c *Config) any { return &c.ReadyTimeout }, Default: 60 * time.Second,
		Usage: "how long an app may take to become ready",
		Check: positive, Reload: Applied, Router: Verbatim},
	{Name: "forward-timeout", Field: func(c *Config) any { return &c.ForwardTimeout }, Default: 10 * time.Second,
		Usage: "how long a request waits for its owner to be ready before 503",
		Check: positive, Reload: Applied, Router: Verbatim},
	{Name: "request-timeout", Field: func(c *Config) any { return &c.RequestTimeout }, Default: 60 * time.Second,
		Usage: "how long the app may take to answer before 504 (0: no limit)",
		Check: offOrPositive, Reload: Applied, Router: Verbatim},
	{Name: "shutdown-timeout", Field: func(c *Config) any { return &c.ShutdownTimeout }, Default: 30 * time.Second,
		Usage: "how long in-flight requests may take to finish on stop, drain and restart",
		Check: positive, Reload: Applied, Router: Verbatim},
	{Name: "max-header-bytes", Field: func(c *Config) any { return &c.MaxHeaderBytes }, Default: 1 << 20,
		Usage: "largest request header accepted (431 above)",
		Check: atLeast(1024), Reload: AppliedLater, Router: Verbatim},
	{Name: "header-timeout", Field: func(c *Config) any { return &c.HeaderTimeout }, Default: process.DefaultHeaderTimeout,
		Usage: "how long a client may take to send a request's header (slow-loris bound)",
		Check: positive, Reload: AppliedLater, Router: Verbatim},
	{Name: "body-timeout", Field: func(c *Config) any { return &c.BodyTimeout }, Default: 30 * time.Second,
		Usage: "how long a client may take to send a request's body (plus a second per 64 KiB received), and to take each write of its answer; then 408 or the connection is closed (0: no bound)",
		Check: offOrPositive, Reload: Applied, Router: Verbatim},
	{Name: "idle-timeout", Field: func(c *Config) any { return &c.IdleTimeout }, Default: process.DefaultIdleTimeout,
		Usage: "close a client's keep-alive connection idle this long",
		Check: positive, Reload: AppliedLater, Router: Verbatim},
	{Name: "max-conns", Field: func(c *Config) any { return &c.MaxConns },
		Usage: "concurrent connections per router (0: unlimited)",
		Check: notNegative("must be 0 (unlimited) or more"), Reload: AppliedLater, Router: Verbatim},
	{Name: "forwarded-allow-ips", Field: func(c *Config) any { return &c.ForwardedAllowIPs },
		Usage: "`CIDR,...` of the fronts (load balancers, TLS terminators) whose X-Forwarded-For is appended to and whose X-Forwarded-Proto, X-Forwarded-Host and Forwarded pass; from any other client they are replaced",
		Check: func(c *Config, s *Setting) error {
			if _, err := process.ParseForwardedAllowIPs(c.ForwardedAllowIPs); err != nil {
				return fmt.Errorf("%w: %v%s", ErrConfig, err, c.from(s.Name))
			}
			return nil
		}, Reload: Applied, Router: Verbatim},
	{Name: "health-timeout", Field: func(c *Config) any { return &c.HealthTimeout },
		Usage: "recycle an app that has answered no health probe (OPTIONS *; any HTTP answer counts) for this long (0: off); whatever it is, an app whose port refuses connections for 5s while it runs is recycled",
		Check: offOrPositive, Reload: Applied, Router: Verbatim},
	{Name: "handoff", Field: func(c *Config) any { return &c.Handoff }, Default: true,
		Usage: "pass a connection to the worker that owns its first request's key, so later requests on it need no hop; --handoff=false forwards instead",
		Check: anyValue, Reload: Applied, Router: Verbatim},
	{Name: "handover", Field: func(c *Config) any { return &c.Handover }, Default: process.HandoverExclusive,
		Usage:  "exclusive: a key is never served by two processes at once (moving keys pause while their old owner finishes); overlap: no pause, old and new owner may overlap briefly",
		Check:  oneOf("use exclusive (a key is never served by two processes at once; moving keys pause) or overlap (no pause; old and new owner may overlap briefly)", process.HandoverExclusive, process.HandoverOverlap),
		Reload: Applied, Router: Verbatim},
	{Name: "handover-path", Field: func(c *Config) any { return &c.HandoverPath },
		Usage: "POST a JSON hand-over notice to the app at `PATH` before keys leave it (scale, restart)",
		Check: checkWith(validHandoverPath), Reload: Applied, Router: Verbatim},
	{Name: "upgrade-grace", Field: func(c *Config) any { return &c.UpgradeGrace }, Default: defaultUpgradeGrace,
		DefaultText: "2s, or half of --forward-timeout when that is 4s or less",
		Usage:       "--handover exclusive: how long an upgraded connection (WebSocket) whose key leaves its process lives on after the app's hand-over notice, before olio ends it (WebSocket close 1012); 0: at once; must be below --forward-timeout",
		Check:       graceBelowForward, Reload: Applied, Router: Verbatim},
	{Name: "embedded", Field: func(c *Config) any { return &c.Embedded },
		Usage: "APP is a Go program that calls router.Serve(handler): it runs as each worker's router and serves its own keys in-process (no app child; the built-in demo without APP)",
		Check: anyValue, Reload: KeptForRestart},
	{Name: "key-stats", Field: func(c *Config) any { return &c.KeyStats }, Default: descend.KeyStatsOn,
		Usage:  "count each worker's hottest keys for olio keys and olio scale --dry-run: on, hashed (olio keys shows a digest of each key, not the key) or off",
		Check:  oneOf("use on (olio keys shows keys), hashed (it shows a digest of each) or off (nothing is counted)", descend.KeyStatsOn, descend.KeyStatsHashed, descend.KeyStatsOff),
		Reload: Applied, Router: Verbatim},
	{Name: "cpu-affinity", Field: func(c *Config) any { return &c.CPUAffinity },
		Usage: "pin worker i (router and app) to CPU i mod the number of CPUs",
		Check: anyValue, Reload: Applied, Router: Derived},
	{Name: "control", Field: func(c *Config) any { return &c.Control },
		Usage: "control socket `PATH` for olio status/reload/scale/stop",
		Check: anyValue, Reload: KeptForUpgrade},
	{Name: "metrics", Field: func(c *Config) any { return &c.Metrics },
		Usage: "serve Prometheus metrics at /metrics and a load balancer's readiness check at /ready on `ADDR` (e.g. 127.0.0.1:9090)",
		Check: anyValue, Reload: KeptForUpgrade},
	{Name: "cluster-addr", Field: func(c *Config) any { return &c.ClusterAddr },
		Usage: "the `HOST:PORT` of the front (load balancer) that hashes keys to hosts, given to apps as OLIO_CLUSTER_ADDR",
		Check: checkWith(validClusterAddr), Reload: Applied, Router: Verbatim},
	{Name: "drain-delay", Field: func(c *Config) any { return &c.DrainDelay },
		Usage: "on stop, answer 503 on /ready and keep serving this long before draining, so the front takes this host out first",
		Check: notNegative("must not be negative (0: drain at once)"), Reload: Applied},
	{Name: "access-log", Field: func(c *Config) any { return &c.AccessLog },
		Usage: "write one line per request (route, worker, key, durations) to `FILE` (reopened on USR1), or - for stdout; in --log-format",
		Check: checkWith(validAccessLog), Reload: Applied, Router: Derived},
	{Name: "pidfile", Field: func(c *Config) any { return &c.PIDFile },
		Usage: "write the master's pid to `FILE`",
		Check: anyValue, Reload: KeptForUpgrade},
}

// LookupSetting is the setting named name, nil if there is none.
func LookupSetting(name string) *Setting {
	for i := range Settings {
		if Settings[i].Name == name {
			return &Settings[i]
		}
	}
	return nil
}

// Value is the setting's value in c: a string, int, bool or time.Duration.
func (s *Setting) Value(c *Config) any {
	return reflect.ValueOf(s.Field(c)).Elem().Interface()
}

// show is the value as a message quotes it: strings in quotes, numbers and durations bare.
func (s *Setting) show(c *Config) string {
	switch v := s.Value(c).(type) {
	case string:
		return strconv.Quote(v)
	case time.Duration:
		return v.String()
	default:
		return fmt.Sprint(v)
	}
}

// bad is an ErrConfig saying what is wrong with the setting's value in c: "--NAME VALUE
// (from SOURCE): problem".
func (s *Setting) bad(c *Config, problem string) error {
	return fmt.Errorf("%w: --%s %s%s: %s", ErrConfig, s.Name, s.show(c), c.from(s.Name), problem)
}

// fieldName is the name of the Config field that s.Field points at.
func (s *Setting) fieldName() string {
	var c Config
	p := reflect.ValueOf(s.Field(&c)).Pointer()
	v := reflect.ValueOf(&c).Elem()
	for i := 0; i < v.NumField(); i++ {
		if v.Field(i).Addr().Pointer() == p && v.Field(i).Type() == reflect.TypeOf(s.Field(&c)).Elem() {
			return v.Type().Field(i).Name
		}
	}
	panic("listener: setting " + s.Name + " points outside Config")
}

// copyToRouter sets, in rc, every Verbatim setting's field to its value in c.
func copyToRouter(c *Config, rc *descend.Config) {
	dst := reflect.ValueOf(rc).Elem()
	for i := range Settings {
		if s := &Settings[i]; s.Router == Verbatim {
			dst.FieldByName(s.fieldName()).Set(reflect.ValueOf(s.Value(c)))
		}
	}
}

// needs says what a new value needs to take effect, for a reload's answer; "" when the
// reload applies it.
func (r Reload) needs() string {
	switch r {
	case AppliedLater:
		return "a restart or a hot upgrade (USR2) to reach the running routers"
	case KeptForUpgrade:
		return "a restart or a hot upgrade (USR2)"
	case KeptForRestart:
		return "a restart"
	}
	return ""
}
