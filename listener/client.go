package listener

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
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

// ScaleBy asks for delta more workers (fewer if negative) than run when the master gets to
// it, waits until the cluster has them, and returns the count it scaled to. A master from
// before relative scaling refuses it (it answers 400), never misreads it.
func (c *Client) ScaleBy(ctx context.Context, delta int) (int, error) {
	var a scaleAnswer
	if err := c.do(ctx, http.MethodPost, scaleByPath(delta, false), &a); err != nil {
		return 0, err
	}
	return a.count()
}

// ScaleByProgress is ScaleBy, calling f as each worker is started or stopped; the summary
// is as ReloadProgress's.
func (c *Client) ScaleByProgress(ctx context.Context, delta int, f func(Progress)) (int, *OpSummary, error) {
	var a scaleAnswer
	sum, err := c.stream(ctx, scaleByPath(delta, true), f, &a)
	if err != nil {
		return 0, nil, err
	}
	n, err := a.count()
	return n, sum, err
}

// scaleByPath is the control path of a relative scale: step=+N or step=-N, the + escaped.
func scaleByPath(delta int, progress bool) string {
	q := url.Values{"step": {fmt.Sprintf("%+d", delta)}}
	if progress {
		q.Set("progress", "1")
	}
	return controlScale + "?" + q.Encode()
}

// scaleAnswer is a scale's answer: the count it scaled to.
type scaleAnswer struct {
	Workers *int `json:"workers"`
}

func (a scaleAnswer) count() (int, error) {
	if a.Workers == nil {
		return 0, errors.New("the master's answer does not say how many workers run now: see olio status")
	}
	return *a.Workers, nil
}

// ReloadProgress is ReloadReport, calling f as each worker completes a step (f runs on the
// caller's goroutine). The summary is nil when the master answered without progress (an
// olio from before progress streaming).
func (c *Client) ReloadProgress(ctx context.Context, f func(Progress)) (*ReloadReport, *OpSummary, error) {
	var r ReloadReport
	sum, err := c.stream(ctx, controlReload+"?progress=1", f, &r)
	if err != nil {
		return nil, nil, err
	}
	return &r, sum, nil
}

// ScaleProgress is Scale, calling f as each worker is started or stopped; the summary is
// as ReloadProgress's.
func (c *Client) ScaleProgress(ctx context.Context, n int, f func(Progress)) (*OpSummary, error) {
	return c.stream(ctx, controlScale+"?workers="+strconv.Itoa(n)+"&progress=1", f, nil)
}

// stream POSTs a command that may answer with a progress stream, calling f
// for each event and decoding the result into out (when not nil).
func (c *Client) stream(ctx context.Context, path string, f func(Progress), out any) (*OpSummary, error) {
	resp, err := c.send(ctx, http.MethodPost, path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if ct, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";"); ct != ndjson {
		return nil, c.decode(resp, http.MethodPost, path, out) // an olio without progress
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, 64<<20))
	for {
		var line streamLine
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("control socket %s: %w", c.path, errCut)
			}
			return nil, fmt.Errorf("control socket %s: %s: a bad progress line: %w", c.path, path, err)
		}
		if err := json.Unmarshal(raw, &line); err != nil {
			return nil, fmt.Errorf("control socket %s: %s: a bad progress line %q: %w", c.path, path, raw, err)
		}
		switch line.Type {
		case "progress":
			if line.Progress != nil && f != nil {
				f(*line.Progress)
			}
		case "result":
			if line.Code >= 300 || line.Error != "" {
				return line.Summary, &ControlError{Code: line.Code, Message: line.Error}
			}
			if out != nil {
				if err := json.Unmarshal(raw, out); err != nil {
					return nil, fmt.Errorf("control socket %s: %s answered %q: %w", c.path, path, raw, err)
				}
			}
			return line.Summary, nil
		}
		// Other types are for newer clients: skipped.
	}
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

// errCut is a progress stream that ended before its result.
var errCut = errors.New("the connection closed before the answer; the command may still be running: check olio status")

// controlDialError marks a failure to connect: nothing answers on the path.
type controlDialError struct{ err error }

func (e *controlDialError) Error() string { return e.err.Error() }
func (e *controlDialError) Unwrap() error { return e.err }

// ControlError is a command the master refused or failed; it wraps ErrConfig or
// ErrStopped when the master's answer says so.
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
	case http.StatusServiceUnavailable:
		return ErrStopped
	}
	return nil
}

// do sends one command and decodes the answer into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, out any) error {
	resp, err := c.send(ctx, method, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return c.decode(resp, method, path, out)
}

// send sends one command and returns the answer, whose body the caller closes.
func (c *Client) send(ctx context.Context, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://olio"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var pe *controlPeerError
		if errors.As(err, &pe) {
			return nil, pe.err
		}
		var de *controlDialError
		if errors.As(err, &de) {
			why := de.err.Error()
			var se *os.SyscallError
			if errors.As(de.err, &se) {
				why = se.Error()
			}
			return nil, fmt.Errorf("%w %s (%s); is `olio serve` running? give the path it uses with --control", ErrNoControl, c.path, why)
		}
		return nil, fmt.Errorf("control socket %s: %w", c.path, err)
	}
	return resp, nil
}

// decode reads a one-JSON answer into out (when not nil), or its error.
func (c *Client) decode(resp *http.Response, method, path string, out any) error {
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
