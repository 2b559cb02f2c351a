package descend

import "time"

// Version is the protocol version carried in every frame. It changes whenever a message
// changes incompatibly.
const Version = 1

// Type names a message on the wire. The values are part of the protocol and pinned by a test.
type Type string

// The message types.
const (
	TypeHello        Type = "hello"
	TypeConfig       Type = "config"
	TypeMembership   Type = "membership"
	TypeState        Type = "state"
	TypeRestart      Type = "restart"
	TypeDrain        Type = "drain"
	TypeStatsRequest Type = "stats_request"
	TypeStats        Type = "stats"
	TypeResult       Type = "result"
	TypePrepare      Type = "prepare"
	TypeRelease      Type = "release"
	TypeKeysRequest  Type = "keys_request"
	TypeKeys         Type = "keys"
	TypeReopen       Type = "reopen"
	TypeRunDir       Type = "run_dir"
)

// Message is one typed message.
type Message interface {
	Type() Type
}

// Hello is the first message a router sends: who it is.
type Hello struct {
	Index int `json:"index"`
	PID   int `json:"pid"`
}

// Config tells a router everything it needs to run its worker. The master sends it right
// after Hello, and again when a reload changes it. The secret travels here, never in argv
// or the router's environment.
//
// A field named like one of the master's settings (listener.Config) of the same type, and
// declared Verbatim in listener.Settings, is filled from it by the table: adding such a
// setting is adding its field here. The others the master makes (listener's routerConfig).
type Config struct {
	Index           int           `json:"index"`
	Key             string        `json:"key"`
	Secret          string        `json:"secret"`
	PublicAddr      string        `json:"public_addr"`
	ClusterAddr     string        `json:"cluster_addr,omitempty"` // the front's address, for OLIO_CLUSTER_ADDR
	RunDir          string        `json:"run_dir"`
	AppPath         string        `json:"app_path"`
	AppArgs         []string      `json:"app_args"`
	AppDir          string        `json:"app_dir,omitempty"`
	ReadyMode       string        `json:"ready_mode"`
	ReadyTimeout    time.Duration `json:"ready_timeout"`
	ForwardTimeout  time.Duration `json:"forward_timeout"`
	RequestTimeout  time.Duration `json:"request_timeout"`
	ShutdownTimeout time.Duration `json:"shutdown_timeout"`
	MaxHeaderBytes  int           `json:"max_header_bytes"`
	HeaderTimeout   time.Duration `json:"header_timeout"` // 0: router.DefaultHeaderTimeout
	BodyTimeout     time.Duration `json:"body_timeout"`   // 0: no bound
	IdleTimeout     time.Duration `json:"idle_timeout"`   // 0: router.DefaultIdleTimeout
	MaxConns        int           `json:"max_conns"`
	HealthTimeout   time.Duration `json:"health_timeout"`
	CPU             int           `json:"cpu"` // CPU to pin to, or -1
	Handoff         bool          `json:"handoff"`
	Handover        string        `json:"handover"`                // "exclusive" or "overlap"
	HandoverPath    string        `json:"handover_path,omitempty"` // POSTed a notice before keys leave the app
	UpgradeGrace    time.Duration `json:"upgrade_grace,omitempty"` // exclusive: an upgraded connection of a moving key lives on this long after the notice
	// Held is set for an embedded worker that replaces a live one (rolling restart): it
	// serves its own keys only once a Release says the process it replaces has drained.
	Held     bool   `json:"held,omitempty"`
	KeyStats string `json:"key_stats,omitempty"` // on, hashed or off; empty: off
	// AccessLog is the access log's absolute path, "-" for the master's stdout (the
	// router's descriptor FDStdout), or empty: no access log.
	AccessLog string `json:"access_log,omitempty"`
	// AccessLogFormat is "text" or "json" (the master's --log-format); empty: text.
	AccessLogFormat string `json:"access_log_format,omitempty"`
	// ForwardedAllowIPs lists the fronts whose forwarded fields pass
	// (router.ParseForwardedAllowIPs); empty: none.
	ForwardedAllowIPs string `json:"forwarded_allow_ips,omitempty"`
}

// Membership is the cluster's shape: how many workers own keys, and where each router's
// private socket is. Routers apply the highest Epoch they have seen and acknowledge with a
// Result carrying ID.
type Membership struct {
	ID      uint64   `json:"id"`
	Epoch   uint64   `json:"epoch"`
	Workers int      `json:"workers"`
	Peers   []string `json:"peers"`
}

// Prepare is the first phase of a membership change (exclusive hand-over): the router
// holds the requests whose owner changes to Workers, waits until the requests it routed
// before have finished, and answers with a Result. The Membership with Epoch commits.
type Prepare struct {
	ID      uint64 `json:"id"`
	Epoch   uint64 `json:"epoch"`
	Workers int    `json:"workers"`
}

// Release tells a held embedded worker (Config.Held) to serve its own keys; answered by a
// Result.
type Release struct {
	ID uint64 `json:"id"`
}

// Reopen asks a router to reopen its access log file (USR1, after logrotate renamed it);
// answered by a Result.
type Reopen struct {
	ID uint64 `json:"id"`
}

// RunDir tells a router that the master made a new private run directory, Dir, because the
// one it had was removed or replaced: the router binds its peer and hand-off sockets (and
// its app's next notify socket) there, and answers with a Result once it listens. The
// Membership that follows names the peers' sockets in Dir.
type RunDir struct {
	ID  uint64 `json:"id"`
	Dir string `json:"dir"`
}

// WorkerState is what a router's worker is doing, as State and Stats report it: the state
// of the supervisor of its app (monitor.State), with the same names.
type WorkerState string

// Worker states reported in State and Stats. A State message carries starting, ready or
// backoff; Stats may also say stopping or stopped, while the router shuts down.
const (
	StateStarting WorkerState = "starting" // an app is started and not yet ready
	StateReady    WorkerState = "ready"    // the current app is ready and serving
	StateBackoff  WorkerState = "backoff"  // no app: waiting to restart it after a crash
	StateStopping WorkerState = "stopping" // the router is draining and stopping its app
	StateStopped  WorkerState = "stopped"  // no app, and none will start
)

// State reports a change in a router's worker: its app started, became ready, crashed.
type State struct {
	Index        int         `json:"index"`
	State        WorkerState `json:"state"`
	AppPID       int         `json:"app_pid"`
	Restarts     int         `json:"restarts"`
	CrashLooping bool        `json:"crash_looping"`
	Error        string      `json:"error,omitempty"`
}

// Restart asks a router for a rolling restart of its app; answered by a Result.
type Restart struct {
	ID uint64 `json:"id"`
}

// Drain asks a router to stop accepting public connections and finish the requests it has
// accepted; answered by a Result. It keeps serving requests forwarded by its peers.
type Drain struct {
	ID uint64 `json:"id"`
	// Replaced says a new process has taken this worker's place (an embedded worker's
	// rolling restart): finish what peers forwarded too, and close the private socket.
	Replaced bool `json:"replaced,omitempty"`
	// KeysMove says the cluster goes on without this router once it has drained (a hot
	// upgrade's new routers take its keys, or a shrink removes it): the upgraded
	// connections it forwards end cleanly (WebSocket close 1012), and under --handover
	// exclusive so do those its app serves. Without it (a plain stop) they are left to the
	// app's own stop.
	KeysMove bool `json:"keys_move,omitempty"`
}

// StatsRequest asks a router for its counters; answered by Stats with the same ID.
type StatsRequest struct {
	ID uint64 `json:"id"`
}

// Stats is a router's counters at one instant.
type Stats struct {
	ID           uint64      `json:"id"`
	Index        int         `json:"index"`
	State        WorkerState `json:"state"`
	AppPID       int         `json:"app_pid"`
	AppStarted   time.Time   `json:"app_started"`
	Restarts     int         `json:"restarts"`
	CrashLooping bool        `json:"crash_looping"`
	InFlight     int64       `json:"in_flight"`
	Served       uint64      `json:"served"`
	ForwardedOut uint64      `json:"forwarded_out"`
	ForwardedIn  uint64      `json:"forwarded_in"`
	HandedOut    uint64      `json:"handed_out"` // connections passed to their owner
	HandedIn     uint64      `json:"handed_in"`  // connections received from another worker
	// Draining is how many old app instances are still draining or stopping after a
	// rolling restart.
	Draining int `json:"draining"`
	// Upgraded counts connections the app upgraded (WebSocket), UpgradesOpen those open
	// now; neither is in Served nor in Duration.
	Upgraded     uint64 `json:"upgraded"`
	UpgradesOpen int64  `json:"upgrades_open"`
	// UpgradesEnded counts upgraded connections an exclusive hand-over ended (their key
	// moved).
	UpgradesEnded uint64 `json:"upgrades_ended,omitempty"`
	// BodyTimeouts counts request bodies that did not arrive within --body-timeout (408),
	// WriteTimeouts writes to a client that did not read within it (connection closed).
	BodyTimeouts  uint64 `json:"body_timeouts"`
	WriteTimeouts uint64 `json:"write_timeouts"`
	Goroutines    int    `json:"goroutines"`
	OpenFDs       int    `json:"open_fds"`
	// Duration is the histogram of request durations served by this worker's app:
	// cumulative counts per upper bound in seconds, as Prometheus wants them.
	Duration Histogram `json:"duration"`
	// LastHold is how long the last membership change held this router's moving keys.
	LastHold time.Duration `json:"last_hold"`
	// AccessLogDropped counts access log lines dropped because the writer fell behind.
	AccessLogDropped uint64 `json:"access_log_dropped,omitempty"`
	// Held counts requests that waited, for their key's new owner (a hand-over) or for
	// the worker's app (starting, or switching in a rolling restart).
	Held uint64 `json:"held,omitempty"`
}

// Histogram is a cumulative histogram snapshot.
type Histogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"` // cumulative, one per bound
	Count  uint64    `json:"count"`
	Sum    float64   `json:"sum"`
}

// Result answers Membership, Restart and Drain. Error is empty on success.
type Result struct {
	ID    uint64 `json:"id"`
	Error string `json:"error,omitempty"`
}

// Key statistics modes (--key-stats), in Config and Keys.
const (
	KeyStatsOn     = "on"     // keys are counted and reported as they are
	KeyStatsHashed = "hashed" // keys are counted and reported as a keyed digest
	KeyStatsOff    = "off"    // nothing is counted
)

// KeysRequest asks a router for its hot keys; answered by Keys with the same ID. Top
// bounds the number of keys in the answer (0: all the router tracks).
type KeysRequest struct {
	ID  uint64 `json:"id"`
	Top int    `json:"top,omitempty"`
}

// Keys is a router's heavy-hitter summary of the keys it served as their owner over its
// recent window, hottest first.
type Keys struct {
	ID    uint64 `json:"id"`
	Index int    `json:"index"`
	Mode  string `json:"mode"` // KeyStatsOn, KeyStatsHashed or KeyStatsOff (then no keys)
	// Window is how far back the counts reach (shorter than the full window while the
	// router is young).
	Window time.Duration `json:"window"`
	// Requests counts the requests with a key this router served as owner in the window.
	Requests uint64 `json:"requests"`
	// MaxError bounds how far any key's count may be from the truth, either way.
	MaxError uint64     `json:"max_error"`
	Keys     []KeyCount `json:"keys,omitempty"`
}

// KeyCount is one tracked key in Keys.
type KeyCount struct {
	// Key is the key (cut at a bound and then ending in "…"), or its digest when Mode
	// is hashed.
	Key   string `json:"key"`
	Hash  uint64 `json:"hash"` // xxhash64 of the key: its owner is router.Jump(Hash, workers)
	Count uint64 `json:"count"`
}

// Type implements Message.
func (*Hello) Type() Type { return TypeHello }

// Type implements Message.
func (*Config) Type() Type { return TypeConfig }

// Type implements Message.
func (*Membership) Type() Type { return TypeMembership }

// Type implements Message.
func (*State) Type() Type { return TypeState }

// Type implements Message.
func (*Restart) Type() Type { return TypeRestart }

// Type implements Message.
func (*Drain) Type() Type { return TypeDrain }

// Type implements Message.
func (*StatsRequest) Type() Type { return TypeStatsRequest }

// Type implements Message.
func (*Stats) Type() Type { return TypeStats }

// Type implements Message.
func (*Result) Type() Type { return TypeResult }

// Type implements Message.
func (*Prepare) Type() Type { return TypePrepare }

// Type implements Message.
func (*Release) Type() Type     { return TypeRelease }
func (*KeysRequest) Type() Type { return TypeKeysRequest }

// Type implements Message.
func (*Keys) Type() Type { return TypeKeys }

// Request is a message whose sender waits for an answer: the Reply that carries the same
// ID. The master sends requests; a router answers each with a Result, Stats or Keys.
type Request interface {
	Message
	RequestID() uint64
}

// Reply answers the Request with the ID it returns.
type Reply interface {
	Message
	ReplyTo() uint64
}

// RequestID implements Request.
func (m *Membership) RequestID() uint64 { return m.ID }

// RequestID implements Request.
func (m *Restart) RequestID() uint64 { return m.ID }

// RequestID implements Request.
func (m *Drain) RequestID() uint64 { return m.ID }

// RequestID implements Request.
func (m *StatsRequest) RequestID() uint64 { return m.ID }

// RequestID implements Request.
func (m *Prepare) RequestID() uint64 { return m.ID }

// RequestID implements Request.
func (m *Release) RequestID() uint64 { return m.ID }

// RequestID implements Request.
func (m *KeysRequest) RequestID() uint64 { return m.ID }

// RequestID implements Request.
func (m *Reopen) RequestID() uint64 { return m.ID }

// ReplyTo implements Reply.
func (m *Result) ReplyTo() uint64 { return m.ID }

// ReplyTo implements Reply.
func (m *Stats) ReplyTo() uint64 { return m.ID }

// ReplyTo implements Reply.
func (m *Keys) ReplyTo() uint64 { return m.ID }

// Type implements Message.
func (*Reopen) Type() Type { return TypeReopen }

// Type implements Message.
func (*RunDir) Type() Type { return TypeRunDir }

// RequestID implements Request.
func (m *RunDir) RequestID() uint64 { return m.ID }

// registry makes an empty message of each type for decoding.
var registry = map[Type]func() Message{
	TypeHello:        func() Message { return new(Hello) },
	TypeConfig:       func() Message { return new(Config) },
	TypeMembership:   func() Message { return new(Membership) },
	TypeState:        func() Message { return new(State) },
	TypeRestart:      func() Message { return new(Restart) },
	TypeDrain:        func() Message { return new(Drain) },
	TypeStatsRequest: func() Message { return new(StatsRequest) },
	TypeStats:        func() Message { return new(Stats) },
	TypeResult:       func() Message { return new(Result) },
	TypePrepare:      func() Message { return new(Prepare) },
	TypeRelease:      func() Message { return new(Release) },
	TypeKeysRequest:  func() Message { return new(KeysRequest) },
	TypeKeys:         func() Message { return new(Keys) },
	TypeReopen:       func() Message { return new(Reopen) },
	TypeRunDir:       func() Message { return new(RunDir) },
}
