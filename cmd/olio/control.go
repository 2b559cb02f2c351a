package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/olio-dev/olio/listener"
)

// controlFlag is --control for the commands that talk to a running olio; its default is
// olio serve's, so the two find each other with no flags. See controlPath for the other
// ways to name it (--control before the command, $OLIO_CONTROL).
func controlFlag() cli.Flag {
	return &cli.StringFlag{Name: "control", Value: defaultControl(), DefaultText: "$" + controlEnv + ", else " + defaultControl(),
		Usage: "control socket `PATH` of the olio to talk to (olio serve's --control)"}
}

// quietFlag is --quiet for reload and scale: the outcome only, no line per worker.
func quietFlag() cli.Flag {
	return &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only the outcome, not each worker as it completes"}
}

func timeoutFlag(d time.Duration, what string) cli.Flag {
	return &cli.DurationFlag{Name: "timeout", Value: d, Usage: "give up waiting for " + what + " after this long"}
}

// client is the client for --control; it refuses the default control socket in a directory
// that is not private to this user (checkControlDir).
func client(c *cli.Context) (*listener.Client, error) {
	path, _ := controlPath(c)
	if err := checkControlDir(path, false); err != nil {
		return nil, err
	}
	return listener.NewClient(path), nil
}

// connect is the client of --control with c's context bounded by --timeout, which must
// be more than 0. cancel is never nil.
func connect(c *cli.Context) (_ context.Context, cancel context.CancelFunc, _ *listener.Client, _ error) {
	d := c.Duration("timeout")
	if d <= 0 {
		return nil, func() {}, nil, badUsage("--timeout %s: must be more than 0, like 30s", d)
	}
	cl, err := client(c)
	if err != nil {
		return nil, func() {}, nil, err
	}
	ctx, cancel := context.WithTimeout(c.Context, d)
	return ctx, cancel, cl, nil
}

// noAnswer says what a command's timeout means: the master may have acted on a command it
// received (acts), so the operator should look before repeating it. Other errors pass.
func noAnswer(c *cli.Context, err error, acts bool) error {
	if !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	path, _ := controlPath(c)
	msg := fmt.Sprintf("no answer within %s from the control socket %s", c.Duration("timeout"), path)
	if acts {
		return fmt.Errorf("%s; the command may still have taken effect: check %s", msg, statusCommandLine(c))
	}
	return fmt.Errorf("%s; olio may be busy: try a longer --timeout", msg)
}

// noOpAnswer is noAnswer for reload and scale, which wait their turn behind an operation
// in progress and run all the same when the command gives up waiting.
func noOpAnswer(c *cli.Context, err error) error {
	if !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	path, _ := controlPath(c)
	return fmt.Errorf("no answer within %s from the control socket %s; the command may still have taken effect, or take effect once the reload, scale or upgrade in progress has finished: check %s",
		c.Duration("timeout"), path, statusCommandLine(c))
}

// statusCommandLine is how to ask the olio that c talks to for its status.
func statusCommandLine(c *cli.Context) string {
	switch path, from := controlPath(c); from {
	case controlFromCommand, controlFromGlobal:
		return "olio status --control " + path
	}
	return "olio status" // $OLIO_CONTROL or the default: found again with no flag
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the workers of a running olio",
		Description: `One row per worker: index, router pid, app pid, state, uptime of the app, restarts,
resident memory (router and app), requests in flight, served by its app, and forwarded
to their owner; then totals. --json prints the same as JSON.`,
		Flags: []cli.Flag{
			controlFlag(),
			timeoutFlag(2*listener.StatsTimeout+5*time.Second, "the answer"),
			&cli.BoolFlag{Name: "json", Usage: "print JSON: {\"workers\": [{\"index\", \"router_pid\", \"app_pid\", \"state\", …}]}"},
		},
		Action: func(c *cli.Context) error {
			ctx, cancel, cl, err := connect(c)
			defer cancel()
			if err != nil {
				return err
			}
			st, err := cl.Status(ctx)
			if err != nil {
				return noAnswer(c, err, false)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return writeStatus(c.App.Writer, st)
		},
	}
}

// jsonFlag is --json for reload, scale and stop: one JSON object with what happened.
func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print one JSON object with what happened: {\"command\", \"ok\", \"workers_before\", \"workers_after\", \"steps\", \"held_requests\", \"took_seconds\", \"error\", …}"}
}

func reloadCommand() *cli.Command {
	return &cli.Command{
		Name:  "reload",
		Usage: "reload the config and restart every app, worker by worker (as kill -HUP does)",
		Flags: []cli.Flag{controlFlag(), timeoutFlag(10*time.Minute, "the rolling restart"), quietFlag(), jsonFlag()},
		Action: func(c *cli.Context) error {
			ctx, cancel, cl, err := connect(c)
			defer cancel()
			if err != nil {
				return err
			}
			if c.Bool("json") {
				began, r := time.Now(), newOpReport(ctx, cl, "reload")
				rep, sum, err := cl.ReloadProgress(ctx, r.step)
				r.summary(sum)
				if err == nil {
					r.Message, r.NotApplied, r.Draining = rep.Message, rep.NotApplied, rep.Draining
				}
				return r.end(c, cl, began, noOpAnswer(c, err))
			}
			var rep *listener.ReloadReport
			var sum *listener.OpSummary
			if c.Bool("quiet") {
				rep, err = cl.ReloadReport(ctx)
			} else {
				p := newProgressPrinter(c.App.Writer)
				rep, sum, err = cl.ReloadProgress(ctx, p.event)
				p.end()
			}
			if err != nil {
				return noOpAnswer(c, err)
			}
			msg := "olio: reloaded: every app replaced" + summaryText(sum)
			if rep.Draining > 0 {
				msg += fmt.Sprintf("; %s still draining (each for at most olio serve's --shutdown-timeout)", plural(rep.Draining, "old app instance"))
			}
			fmt.Fprintln(c.App.Writer, msg)
			for _, line := range rep.NotApplied {
				fmt.Fprintln(c.App.Writer, "olio: not applied: "+line)
			}
			return nil
		},
	}
}

func scaleCommand() *cli.Command {
	return &cli.Command{
		Name:      "scale",
		Usage:     "change the number of workers",
		ArgsUsage: "N | +N | -N",
		Description: `Starts or stops workers until there are N; only the keys jump hash assigns to the
added or removed workers change owner. N may be 0: the socket stays bound and every
request gets 503 until the cluster grows again. Flags may come before or after N.

+N and -N add or remove N workers to the count olio runs when it gets to the command
(after a reload, scale or upgrade in progress): unlike quick TTIN or TTOU signals, which
the kernel may merge, each command counts. An olio from before relative scaling refuses
+N and -N rather than misread them.

--dry-run changes nothing: from the keys each worker counts (see olio keys), it says how
many of them and what share of the recent requests would change owner, and the
imbalance (busiest worker ÷ mean) to expect at N workers.

--json prints one JSON object: with --dry-run the plan, otherwise what happened (workers
before and after, each worker's step, requests held, how long it took, the error).`,
		Flags: []cli.Flag{
			controlFlag(), timeoutFlag(10*time.Minute, "the new workers"), quietFlag(),
			&cli.BoolFlag{Name: "dry-run", Usage: "say what scaling to N would move, and change nothing"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object: what happened, or with --dry-run the plan"},
		},
		Action: func(c *cli.Context) error {
			args, dryRun := c.Args().Slice(), c.Bool("dry-run")
			if len(args) == 2 && args[1] == "--dry-run" { // olio scale N --dry-run, as people type it
				args, dryRun = args[:1], true
			}
			arg, err := scaleArg(args)
			if err != nil {
				return err
			}
			ctx, cancel, cl, err := connect(c)
			defer cancel()
			if err != nil {
				return err
			}
			if dryRun {
				n := arg.n
				if arg.relative {
					// Nothing changes: the count read now is good enough to plan from.
					st, err := cl.Status(ctx)
					if err != nil {
						return noAnswer(c, err, false)
					}
					if n = st.Members + arg.n; n < 0 {
						return badUsage("%+d: only %s run", arg.n, plural(st.Members, "worker"))
					}
				}
				return planCommand(ctx, c, cl, n)
			}
			n, step := arg.n, ""
			began, r := time.Now(), newOpReport(ctx, cl, "scale")
			asJSON, quiet := c.Bool("json"), c.Bool("quiet")
			event := r.step
			var p *progressPrinter
			if !asJSON && !quiet {
				p = newProgressPrinter(c.App.Writer)
				event = func(e listener.Progress) { r.step(e); p.event(e) }
			}
			var sum *listener.OpSummary
			switch {
			case arg.relative && quiet && !asJSON:
				n, err = cl.ScaleBy(ctx, arg.n)
			case arg.relative:
				n, sum, err = cl.ScaleByProgress(ctx, arg.n, event)
			case quiet && !asJSON:
				err = cl.Scale(ctx, n)
			default:
				sum, err = cl.ScaleProgress(ctx, n, event)
			}
			if p != nil {
				p.end()
			}
			if arg.relative {
				step = fmt.Sprintf(" (%+d)", arg.n)
				err = olderMaster(err)
			}
			nothing := err == nil && r.WorkersBefore == n && len(r.Steps) == 0
			if asJSON {
				r.summary(sum)
				if err == nil {
					r.Message = "scaled to " + plural(n, "worker") + step
					if nothing {
						r.Message = "already at " + plural(n, "worker")
					}
				}
				return r.end(c, cl, began, noOpAnswer(c, err))
			}
			if err != nil {
				return noOpAnswer(c, err)
			}
			if nothing {
				fmt.Fprintf(c.App.Writer, "olio: already at %s, nothing changed\n", plural(n, "worker"))
				return nil
			}
			fmt.Fprintf(c.App.Writer, "olio: scaled to %s%s%s\n", plural(n, "worker"), step, summaryText(sum))
			return nil
		},
	}
}

// scaleTarget is what olio scale asks for: n workers, or, if relative, n more (fewer if
// negative) than run.
type scaleTarget struct {
	n        int
	relative bool
}

// scaleArg is olio scale's one argument: the number of workers N, or a step +N or -N.
func scaleArg(args []string) (scaleTarget, error) {
	switch {
	case len(args) == 0:
		return scaleTarget{}, badUsage("give the number of workers: olio scale [--control PATH] N (or +N, -N to add or remove N)")
	case len(args) > 1:
		return scaleTarget{}, badUsage("unexpected argument %q after N: olio scale [--control PATH] N", args[1])
	}
	a := args[0]
	relative := a != "" && (a[0] == '+' || a[0] == '-')
	digits := a
	if relative {
		digits = a[1:]
	}
	n, err := strconv.Atoi(digits)
	if err != nil || digits == "" || digits[0] < '0' || digits[0] > '9' {
		return scaleTarget{}, badUsage("%q is not a number of workers: give a whole number N, 0 or more, or +N or -N to add or remove N", a)
	}
	if n > listener.MaxWorkers {
		return scaleTarget{}, badUsage("%q: olio runs at most %d workers", a, listener.MaxWorkers)
	}
	if relative && a[0] == '-' {
		n = -n
	}
	return scaleTarget{n: n, relative: relative}, nil
}

// olderMaster explains the refusal of an olio from before relative scaling, which answers
// a step with its complaint that no count was given.
func olderMaster(err error) error {
	var ce *listener.ControlError
	if errors.As(err, &ce) && ce.Code == 400 && strings.Contains(ce.Message, `workers="" is not a whole number`) {
		return fmt.Errorf("this olio is older than relative scaling (+N, -N) and refused it: give the number of workers to run, e.g. olio scale N (see olio status): %w", err)
	}
	return err
}

func stopCommand() *cli.Command {
	return &cli.Command{
		Name:  "stop",
		Usage: "stop a running olio gracefully (as kill -TERM does) and wait until it has exited",
		Flags: []cli.Flag{
			controlFlag(),
			timeoutFlag(2*time.Minute, "olio to exit"),
			&cli.BoolFlag{Name: "no-wait", Usage: "return once olio has begun stopping"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			ctx, cancel, cl, err := connect(c)
			defer cancel()
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return stopJSON(ctx, c, cl)
			}
			ping, err := cl.Ping(ctx)
			if err != nil {
				return noAnswer(c, err, false)
			}
			if err := cl.Stop(ctx); err != nil {
				return noAnswer(c, err, true)
			}
			if c.Bool("no-wait") {
				fmt.Fprintf(c.App.Writer, "olio: pid %d is stopping\n", ping.PID)
				return nil
			}
			if err := waitGone(ctx, cl); err != nil {
				return stillStopping(c, ping.PID)
			}
			fmt.Fprintf(c.App.Writer, "olio: pid %d stopped\n", ping.PID)
			return nil
		},
	}
}

// stopJSON is olio stop --json: the report says how many workers ran and, unless
// --no-wait, that none is left (workers_after 0) once olio has exited.
func stopJSON(ctx context.Context, c *cli.Context, cl *listener.Client) error {
	began, r := time.Now(), newOpReport(ctx, cl, "stop")
	if r.WorkersBefore < 0 { // no status: say why, as olio stop without --json does
		_, err := cl.Ping(ctx)
		if err == nil {
			err = errors.New("olio answered ping but not status")
		}
		return r.end(c, nil, began, noAnswer(c, err, false))
	}
	if err := cl.Stop(ctx); err != nil {
		return r.end(c, nil, began, noAnswer(c, err, true))
	}
	if c.Bool("no-wait") {
		r.Message = fmt.Sprintf("pid %d is stopping", r.PID)
		return r.end(c, nil, began, nil)
	}
	if err := waitGone(ctx, cl); err != nil {
		return r.end(c, nil, began, stillStopping(c, r.PID))
	}
	r.Message, r.WorkersAfter = fmt.Sprintf("pid %d stopped", r.PID), 0
	return r.end(c, nil, began, nil)
}

// stillStopping is olio stop's error when olio has not exited within --timeout.
func stillStopping(c *cli.Context, pid int) error {
	return fmt.Errorf("olio pid %d is still stopping after %s (in-flight requests may take up to its --shutdown-timeout); give a longer --timeout to wait for it", pid, c.Duration("timeout"))
}

// waitGone waits until nothing answers on the control socket: the master removes it as the
// last thing before exiting.
func waitGone(ctx context.Context, cl *listener.Client) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := cl.Ping(ctx); errors.Is(err, listener.ErrNoControl) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// writeStatus prints the cluster line, the worker table and its totals.
func writeStatus(out io.Writer, st *listener.Status) error {
	fmt.Fprintf(out, "olio pid %d on %s: %s, %d ready, epoch %d, up %s\n\n",
		st.PID, st.Listen, plural(st.Members, "worker"), st.Ready, st.Epoch, duration(st.UptimeSeconds))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tROUTER PID\tAPP PID\tSTATE\tUPTIME\tRESTARTS\tRSS\tIN-FLIGHT\tSERVED\tFORWARDED")
	var tot listener.WorkerStatus
	var notes []string
	for _, w := range st.Workers {
		state := w.State
		if w.CrashLooping {
			state += " (crash-looping)"
		}
		if w.Draining > 0 {
			state += fmt.Sprintf(" (+%d draining)", w.Draining)
		}
		if !w.Member {
			state += "*"
		}
		if w.Error != "" {
			state += "!"
			notes = append(notes, fmt.Sprintf("! worker %d sent no counters (%s)", w.Index, w.Error))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\n", w.Index, pid(w.RouterPID), pid(w.AppPID),
			state, duration(w.UptimeSeconds), w.Restarts, bytesIEC(w.RSSBytes), w.InFlight, w.Served, w.Forwarded)
		tot.Restarts += w.Restarts
		tot.RSSBytes += w.RSSBytes
		tot.InFlight += w.InFlight
		tot.Served += w.Served
		tot.Forwarded += w.Forwarded
	}
	fmt.Fprintf(tw, "TOTAL\t\t\t\t\t%d\t%s\t%d\t%d\t%d\n", tot.Restarts, bytesIEC(tot.RSSBytes), tot.InFlight, tot.Served, tot.Forwarded)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, w := range st.Workers {
		if !w.Member {
			notes = append([]string{"* not a member (joining or leaving): owns no keys"}, notes...)
			break
		}
	}
	if st.RunDirNote != "" {
		notes = append(notes, "! "+st.RunDirNote)
	}
	for _, w := range st.Workers {
		if w.UpgradesOpen > 0 || w.UpgradesEnded > 0 {
			notes = append(notes, fmt.Sprintf("worker %d: %s open, %d ended by hand-overs (key moved)",
				w.Index, plural(int(w.UpgradesOpen), "upgraded connection"), w.UpgradesEnded))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(out)
	}
	for _, n := range notes {
		fmt.Fprintln(out, n)
	}
	return nil
}

// plural is "1 worker", "2 workers".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func pid(p int) string {
	if p <= 0 {
		return "-"
	}
	return strconv.Itoa(p)
}

// duration prints seconds the way ps and pm2 do: the two largest units, "-" for none
// (0: not running), "0s" under a second.
func duration(sec float64) string {
	s := int64(sec)
	switch {
	case sec <= 0:
		return "-"
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
}

// bytesIEC prints a byte count in KiB, MiB or GiB with one decimal, "-" for none.
func bytesIEC(n uint64) string {
	const k = 1024
	switch {
	case n == 0:
		return "-"
	case n < k*k:
		return fmt.Sprintf("%.1f KiB", float64(n)/k)
	case n < k*k*k:
		return fmt.Sprintf("%.1f MiB", float64(n)/(k*k))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(k*k*k))
}
