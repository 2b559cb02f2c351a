package main

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/olio-dev/olio/listener"
)

// opReport is what olio reload, scale and stop print with --json: one object saying what
// happened, written whether the command succeeded or not.
type opReport struct {
	Command string `json:"command"` // reload, scale or stop
	OK      bool   `json:"ok"`
	Message string `json:"message,omitempty"` // the outcome in words, as printed without --json
	Error   string `json:"error,omitempty"`   // why the command failed
	PID     int    `json:"pid,omitempty"`     // the master's
	// WorkersBefore and WorkersAfter are the members (workers that own keys) before the
	// command was sent and once it had answered; -1 when olio did not say.
	WorkersBefore int `json:"workers_before"`
	WorkersAfter  int `json:"workers_after"`
	// Changed says whether the command did something: false for olio scale N at N workers.
	Changed bool `json:"changed"`
	// Steps are the workers' steps, in the order they completed (restart, start, stop,
	// rollback; see listener.Progress).
	Steps []listener.Progress `json:"steps"`
	// HeldRequests counts the requests that waited during the command, for their key's new
	// owner or for their worker's app; LongestHoldSeconds is the longest such hold, 0 when
	// no request waited.
	HeldRequests       uint64   `json:"held_requests"`
	LongestHoldSeconds float64  `json:"longest_hold_seconds"`
	TookSeconds        float64  `json:"took_seconds"`
	NotApplied         []string `json:"not_applied,omitempty"` // reload: see listener.ReloadReport
	Draining           int      `json:"draining,omitempty"`    // reload: old apps still draining
}

// newOpReport starts a report on command, with the members olio has now (-1 when it does
// not answer: the command then fails the same way).
func newOpReport(ctx context.Context, cl *listener.Client, command string) *opReport {
	r := &opReport{Command: command, WorkersBefore: -1, WorkersAfter: -1, Steps: []listener.Progress{}}
	if st, err := cl.Status(ctx); err == nil {
		r.PID, r.WorkersBefore = st.PID, st.Members
	}
	return r
}

// step records one worker's step.
func (r *opReport) step(p listener.Progress) { r.Steps = append(r.Steps, p) }

// summary records the master's summary of the operation (nil from an olio without one).
func (r *opReport) summary(s *listener.OpSummary) {
	if s == nil {
		return
	}
	r.TookSeconds, r.HeldRequests = s.Took, s.HeldRequests
	if s.HeldRequests > 0 {
		r.LongestHoldSeconds = s.Held
	}
}

// end records the members after the command and its outcome, and prints the report; err
// is the command's error, which it returns.
func (r *opReport) end(c *cli.Context, cl *listener.Client, began time.Time, err error) error {
	if r.TookSeconds == 0 {
		r.TookSeconds = time.Since(began).Seconds()
	}
	if cl != nil {
		ctx, cancel := context.WithTimeout(context.Background(), listener.StatsTimeout+3*time.Second)
		if st, serr := cl.Status(ctx); serr == nil {
			r.WorkersAfter = st.Members
		}
		cancel()
	}
	r.Changed = len(r.Steps) > 0 || r.WorkersBefore != r.WorkersAfter
	r.OK = err == nil
	if err != nil {
		r.Error = err.Error()
	}
	if perr := printJSON(c.App.Writer, r); perr != nil && err == nil {
		return perr
	}
	return err
}

// summaryText is the summary's parenthesis: " (took 3.10 s, 12 requests held, longest
// 2ms)", " (took 0.08 s)" when no request waited, or "" when the master sent none.
func summaryText(s *listener.OpSummary) string {
	if s == nil {
		return ""
	}
	if s.HeldRequests == 0 {
		return fmt.Sprintf(" (took %s)", seconds(s.Took))
	}
	held := fmt.Sprintf("%s held", plural(int(s.HeldRequests), "request"))
	if s.Held > 0 {
		held += ", longest " + time.Duration(s.Held*float64(time.Second)).Round(time.Microsecond).String()
	}
	return fmt.Sprintf(" (took %s, %s)", seconds(s.Took), held)
}
