package listener

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Client sends control commands to a running master over its control socket. Its
// methods are safe for concurrent use.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the master whose control socket is at path. Nothing is
// dialled until a command is sent.
func NewClient(path string) *Client {
	d := &net.Dialer{}
	return &Client{path: path, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := d.DialContext(ctx, "unix", path)
			if err != nil {
				return nil, &controlDialError{err}
			}
			if err := checkPeer(c, path); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
		DisableKeepAlives: true,
	}}}
}

// Path is the control socket's path.
func (c *Client) Path() string { return c.path }

// Ping asks which olio answers.
func (c *Client) Ping(ctx context.Context) (Ping, error) {
	var p Ping
	err := c.do(ctx, http.MethodGet, controlPing, &p)
	return p, err
}

// Status asks for the cluster's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.do(ctx, http.MethodGet, controlStatus, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Reload asks for a reload (as HUP does) and waits until it is done.
func (c *Client) Reload(ctx context.Context) error {
	_, err := c.ReloadReport(ctx)
	return err
}

// ReloadReport is a successful reload's answer.
type ReloadReport struct {
	Message string `json:"message"`
	// NotApplied says, one setting a line, what the config file changes that a reload
	// leaves as it is (listen, secret, control, metrics, pidfile) and what applies it: a
	// restart, or for some a hot upgrade (USR2). Print it: the new values are not in use.
	NotApplied []string `json:"not_applied,omitempty"`
	// Draining is how many old app instances were still draining when the reload returned
	// (it returns once every worker runs the new app; each old one drains on, bounded by
	// --shutdown-timeout).
	Draining int `json:"draining,omitempty"`
}

// ReloadReport asks for a reload, as Reload does, and returns the master's report.
func (c *Client) ReloadReport(ctx context.Context) (*ReloadReport, error) {
	var r ReloadReport
	if err := c.do(ctx, http.MethodPost, controlReload, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Scale asks for n workers and waits until the cluster has them.
func (c *Client) Scale(ctx context.Context, n int) error {
	return c.do(ctx, http.MethodPost, controlScale+"?workers="+strconv.Itoa(n), nil)
}

// Keys asks for the cluster's hottest keys, at most top of them (0: every tracked key).
func (c *Client) Keys(ctx context.Context, top int) (*KeysReport, error) {
	var r KeysReport
	if err := c.do(ctx, http.MethodGet, controlKeys+"?top="+strconv.Itoa(top), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// PlanScale asks what scaling to n workers would move, without scaling.
func (c *Client) PlanScale(ctx context.Context, n int) (*ScalePlan, error) {
	var p ScalePlan
	if err := c.do(ctx, http.MethodGet, controlPlan+"?workers="+strconv.Itoa(n), &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Stop asks for a graceful stop. It returns once the master has begun stopping.
func (c *Client) Stop(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, controlStop, nil)
}

// checkPeer refuses a control socket served by a process of another user than this one,
// unless that user is root (whose sockets no other user can put in place): a client sends
// its commands (stop, scale, reload) only to an olio of its own user's, never to one that
// another local user put at the path.
func checkPeer(c net.Conn, path string) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return &controlPeerError{fmt.Errorf("%w: %s: cannot tell who serves it: %w", ErrControlPeer, path, cerr)}
	}
	if uid := int(cred.Uid); uid != os.Getuid() && uid != 0 {
		return &controlPeerError{fmt.Errorf("%w: %s is served by pid %d of uid %d, not by you (uid %d) nor by root; no command was sent; to control that olio, run the command as its user (sudo -u '#%d' olio …)",
			ErrControlPeer, path, cred.Pid, uid, os.Getuid(), uid)}
	}
	return nil
}

// controlPeerError marks a refused server, so that do reports it as it is.
type controlPeerError struct{ err error }

func (e *controlPeerError) Error() string { return e.err.Error() }
func (e *controlPeerError) Unwrap() error { return e.err }

// controlDialError marks a failure to connect: nothing answers on the path.
type controlDialError struct{ err error }

func (e *controlDialError) Error() string { return e.err.Error() }
func (e *controlDialError) Unwrap() error { return e.err }

// ControlError is a command the master refused or failed; it wraps ErrConfig, ErrBusy
// or ErrStopped when the master's answer says so.
type ControlError struct {
	Code    int    // the HTTP status of the answer
	Message string // the master's explanation
}

func (e *ControlError) Error() string { return e.Message }

// Unwrap returns the sentinel error that the answer's status stands for, if any.
func (e *ControlError) Unwrap() error {
	switch e.Code {
	case http.StatusBadRequest:
		return ErrConfig
	case http.StatusConflict:
		return ErrBusy
	case http.StatusServiceUnavailable:
		return ErrStopped
	}
	return nil
}

// do sends one command and decodes the answer into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://olio"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var pe *controlPeerError
		if errors.As(err, &pe) {
			return pe.err
		}
		var de *controlDialError
		if errors.As(err, &de) {
			why := de.err.Error()
			var se *os.SyscallError
			if errors.As(de.err, &se) {
				why = se.Error()
			}
			return fmt.Errorf("%w %s (%s); is `olio serve` running? give the path it uses with --control", ErrNoControl, c.path, why)
		}
		return fmt.Errorf("control socket %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("control socket %s: %w", c.path, err)
	}
	if resp.StatusCode >= 300 {
		var a controlAnswer
		if json.Unmarshal(body, &a) != nil || a.Error == "" {
			a.Error = fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body)))
		}
		return &ControlError{Code: resp.StatusCode, Message: a.Error}
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("control socket %s: %s answered %q: %w", c.path, path, body, err)
		}
	}
	return nil
}
