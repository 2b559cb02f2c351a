package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/olio-dev/olio/listener"
)

// controlFlag is --control for the commands that talk to a running olio; its default is
// olio serve's, so the two find each other with no flags.
func controlFlag() cli.Flag {
	return &cli.StringFlag{Name: "control", Value: defaultControl(), Usage: "control socket `PATH` of the olio to talk to (olio serve's --control)"}
}

func timeoutFlag(d time.Duration, what string) cli.Flag {
	return &cli.DurationFlag{Name: "timeout", Value: d, Usage: "give up waiting for " + what + " after this long"}
}

func client(c *cli.Context) *listener.Client { return listener.NewClient(c.String("control")) }

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the workers of a running olio",
		Description: `One row per worker: index, router pid, app pid, state, uptime of the app, restarts,
resident memory (router and app), requests in flight, served by its app, and forwarded
to their owner; then totals. --json prints the same as JSON.`,
		Flags: []cli.Flag{
			controlFlag(),
			&cli.BoolFlag{Name: "json", Usage: "print JSON: {\"workers\": [{\"index\", \"router_pid\", \"app_pid\", \"state\", …}]}"},
		},
		Action: func(c *cli.Context) error {
			ctx, cancel := context.WithTimeout(c.Context, 2*listener.StatsTimeout+5*time.Second)
			defer cancel()
			st, err := client(c).Status(ctx)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return writeStatus(os.Stdout, st)
		},
	}
}

func reloadCommand() *cli.Command {
	return &cli.Command{
		Name:  "reload",
		Usage: "reload the config and restart every app, worker by worker (as kill -HUP does)",
		Flags: []cli.Flag{controlFlag(), timeoutFlag(10*time.Minute, "the rolling restart")},
		Action: func(c *cli.Context) error {
			ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
			defer cancel()
			if err := client(c).Reload(ctx); err != nil {
				return err
			}
			fmt.Println("olio: reloaded: every app replaced")
			return nil
		},
	}
}

func scaleCommand() *cli.Command {
	return &cli.Command{
		Name:      "scale",
		Usage:     "change the number of workers",
		ArgsUsage: "N",
		Description: `Starts or stops workers until there are N; only the keys jump hash assigns to the
added or removed workers change owner. N may be 0: the socket stays bound and every
request gets 503 until the cluster grows again.`,
		Flags: []cli.Flag{controlFlag(), timeoutFlag(10*time.Minute, "the new workers")},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return errors.New("scale takes one argument, the number of workers, after any flags: olio scale [--control PATH] N")
			}
			n, err := strconv.Atoi(c.Args().First())
			if err != nil || n < 0 {
				return fmt.Errorf("scale %q: give the number of workers, a whole number from 0", c.Args().First())
			}
			ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
			defer cancel()
			if err := client(c).Scale(ctx, n); err != nil {
				return err
			}
			fmt.Printf("olio: scaled to %d workers\n", n)
			return nil
		},
	}
}

func stopCommand() *cli.Command {
	return &cli.Command{
		Name:  "stop",
		Usage: "stop a running olio gracefully (as kill -TERM does) and wait until it has exited",
		Flags: []cli.Flag{
			controlFlag(),
			timeoutFlag(2*time.Minute, "olio to exit"),
			&cli.BoolFlag{Name: "no-wait", Usage: "return once olio has begun stopping"},
		},
		Action: func(c *cli.Context) error {
			ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
			defer cancel()
			cl := client(c)
			ping, err := cl.Ping(ctx)
			if err != nil {
				return err
			}
			if err := cl.Stop(ctx); err != nil {
				return err
			}
			if c.Bool("no-wait") {
				fmt.Printf("olio: pid %d is stopping\n", ping.PID)
				return nil
			}
			if err := waitGone(ctx, cl); err != nil {
				return fmt.Errorf("olio pid %d is still stopping: %w", ping.PID, err)
			}
			fmt.Printf("olio: pid %d stopped\n", ping.PID)
			return nil
		},
	}
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
	fmt.Fprintf(out, "olio pid %d on %s: %d workers, %d ready, epoch %d, up %s\n\n",
		st.PID, st.Listen, st.Members, st.Ready, st.Epoch, duration(st.UptimeSeconds))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tROUTER PID\tAPP PID\tSTATE\tUPTIME\tRESTARTS\tRSS\tIN-FLIGHT\tSERVED\tFORWARDED")
	var tot listener.WorkerStatus
	var notes []string
	for _, w := range st.Workers {
		state := w.State
		if w.CrashLooping {
			state += " (crash-looping)"
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
	if len(notes) > 0 {
		fmt.Fprintln(out)
	}
	for _, n := range notes {
		fmt.Fprintln(out, n)
	}
	return nil
}

func pid(p int) string {
	if p <= 0 {
		return "-"
	}
	return strconv.Itoa(p)
}

// duration prints seconds the way ps and pm2 do: the two largest units, "-" for none.
func duration(sec float64) string {
	s := int64(sec)
	switch {
	case s <= 0:
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
