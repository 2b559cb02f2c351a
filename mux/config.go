package mux

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hashicorp/yamux"
)

// Defaults and limits of Config.
const (
	// DefaultDialTimeout bounds one connect attempt.
	DefaultDialTimeout = time.Second
	// DefaultRetryInterval is the pause between connect attempts while a peer is absent.
	DefaultRetryInterval = 50 * time.Millisecond
	// MaxRetryInterval caps Config.RetryInterval, so a waiting request notices
	// a returning peer quickly.
	MaxRetryInterval = 500 * time.Millisecond
	// DefaultKeepAliveInterval is how often each end of a session pings the other
	// (DefaultYamuxConfig), so that a live peer is heard from that often even when idle.
	DefaultKeepAliveInterval = 500 * time.Millisecond
	// DefaultSilence is the default Config.Silence: three keep-alive intervals.
	DefaultSilence = 3 * DefaultKeepAliveInterval
)

// Config tunes a Listener or a Pool. A nil *Config means DefaultConfig(), and
// a zero field means that field's default.
type Config struct {
	// Yamux configures every session. Nil means DefaultYamuxConfig(), with
	// yamux's log lines sent to Logger at level Warn (or discarded).
	// A non-nil value must pass yamux.VerifyConfig; it is copied.
	Yamux *yamux.Config

	// DialTimeout bounds one connect attempt; zero means DefaultDialTimeout.
	DialTimeout time.Duration

	// RetryInterval is the pause between connect attempts while a peer is
	// absent; zero means DefaultRetryInterval. At most MaxRetryInterval.
	RetryInterval time.Duration

	// Silence is how long a Pool's session may go without a byte from its peer
	// before the peer counts as silent: stopped (SIGSTOP), or too stuck to answer
	// a ping. A silent peer is not sent anything more: Open and Ready wait until it
	// is heard from again, Live and Heard report false, and a stream on its session
	// says so (Stream.PeerSilent). Zero means DefaultSilence, or three keep-alive
	// intervals if Yamux pings less often; it must be longer than the keep-alive
	// interval, or an idle peer would look silent between two pings.
	Silence time.Duration

	// Logger receives the rare events worth a line: accept errors, yamux's
	// own warnings. Nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the configuration used for a nil *Config.
func DefaultConfig() *Config {
	return &Config{
		DialTimeout:   DefaultDialTimeout,
		RetryInterval: DefaultRetryInterval,
	}
}

// DefaultYamuxConfig returns the yamux settings olio uses between routers,
// tuned for throughput on loopback: a 1 MiB stream window (yamux's default is
// 256 KiB), room for 1024 streams waiting to be accepted, a keep-alive ping every
// DefaultKeepAliveInterval (so that a stopped peer is noticed within Config.Silence;
// one that does not answer a ping within ConnectionWriteTimeout has its session
// closed), and no log output. Start from it to tweak a field.
func DefaultYamuxConfig() *yamux.Config {
	return &yamux.Config{
		AcceptBacklog:          1024,
		EnableKeepAlive:        true,
		KeepAliveInterval:      DefaultKeepAliveInterval,
		ConnectionWriteTimeout: 10 * time.Second,
		MaxStreamWindowSize:    1 << 20,
		// A stream the peer never acknowledges means its accept side is
		// stuck: give up on the session so the next Open re-dials.
		StreamOpenTimeout: 30 * time.Second,
		// Bound the wait for the peer's FIN after a local Close.
		StreamCloseTimeout: time.Minute,
		LogOutput:          io.Discard,
	}
}

// VerifyConfig reports whether c is usable, with an error naming the bad field.
// A nil c is valid.
func VerifyConfig(c *Config) error {
	_, _, err := resolve(c)
	return err
}

// resolve returns a copy of c with defaults filled in, and the yamux
// configuration to use, or an error naming the bad field.
func resolve(c *Config) (*Config, *yamux.Config, error) {
	r := DefaultConfig()
	if c != nil {
		*r = *c
	}
	switch {
	case r.DialTimeout < 0:
		return nil, nil, fmt.Errorf("mux: config: DialTimeout %v is negative", r.DialTimeout)
	case r.DialTimeout == 0:
		r.DialTimeout = DefaultDialTimeout
	}
	switch {
	case r.RetryInterval < 0:
		return nil, nil, fmt.Errorf("mux: config: RetryInterval %v is negative", r.RetryInterval)
	case r.RetryInterval > MaxRetryInterval:
		return nil, nil, fmt.Errorf("mux: config: RetryInterval %v is above the cap of %v", r.RetryInterval, MaxRetryInterval)
	case r.RetryInterval == 0:
		r.RetryInterval = DefaultRetryInterval
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	var y *yamux.Config
	if r.Yamux != nil {
		y = r.Yamux.Clone()
	} else {
		y = DefaultYamuxConfig()
		if c != nil && c.Logger != nil {
			y.LogOutput = nil
			y.Logger = slog.NewLogLogger(c.Logger.Handler(), slog.LevelWarn)
		}
	}
	if err := yamux.VerifyConfig(y); err != nil {
		return nil, nil, fmt.Errorf("mux: config: Yamux: %w", err)
	}
	switch {
	case r.Silence < 0:
		return nil, nil, fmt.Errorf("mux: config: Silence %v is negative", r.Silence)
	case r.Silence == 0:
		r.Silence = DefaultSilence
		if y.EnableKeepAlive {
			r.Silence = max(r.Silence, 3*y.KeepAliveInterval)
		}
	case y.EnableKeepAlive && r.Silence <= y.KeepAliveInterval:
		return nil, nil, fmt.Errorf("mux: config: Silence %v is not longer than the keep-alive interval %v: an idle peer would look silent between pings", r.Silence, y.KeepAliveInterval)
	}
	r.Yamux = y
	return r, y, nil
}
