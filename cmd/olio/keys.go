package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/listener"
	"github.com/olio-dev/olio/router/process"
)

func keysCommand() *cli.Command {
	return &cli.Command{
		Name:  "keys",
		Usage: "show the hottest keys of a running olio, their owners and each worker's load",
		Description: fmt.Sprintf(`The cluster's hottest keys over the last minute: key, owner worker, requests/s, share
of its owner's requests and of the cluster's; then per worker its requests/s with a key
and the share its hottest key takes, and the imbalance (busiest worker ÷ mean). Each
worker counts the keys it serves as their owner in a bounded summary (Space-Saving, %d
keys per 10 s step), so a count is at most max_error_share from the truth. With olio
serve --key-stats hashed, keys are shown as a digest; with off, nothing is counted.`, process.HotKeysCapacity),
		Flags: []cli.Flag{
			controlFlag(),
			timeoutFlag(2*listener.StatsTimeout+5*time.Second, "the answer"),
			&cli.IntFlag{Name: "top", Value: 10, Usage: "show the `N` hottest keys (0: every key tracked)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON: {\"keys\": [{\"key\", \"owner\", \"requests_per_second\", \"worker_share\", \"cluster_share\"}], \"workers\": […], …}"},
		},
		Action: func(c *cli.Context) error {
			top := c.Int("top")
			if top < 0 {
				return badUsage("--top %d: give 0 (every key) or more", top)
			}
			ctx, cancel, cl, err := connect(c)
			defer cancel()
			if err != nil {
				return err
			}
			rep, err := cl.Keys(ctx, top)
			if err != nil {
				return noAnswer(c, err, false)
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, rep)
			}
			if rep.Mode == descend.KeyStatsOff {
				return errKeyStatsOff
			}
			return writeKeys(c.App.Writer, rep)
		},
	}
}

var errKeyStatsOff = fmt.Errorf("keys are not counted: this olio runs with --key-stats off; set key-stats to on or hashed (flag, or config file and olio reload)")

func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeKeys prints the keys table, then the workers table.
func writeKeys(out io.Writer, rep *listener.KeysReport) error {
	fmt.Fprintf(out, "olio keys: last %s, %s, %.1f requests/s with a key, imbalance %.2f (busiest worker ÷ mean)\n\n",
		window(rep.WindowSeconds), plural(rep.Members, "worker"), rep.RequestsPerSecond, rep.Imbalance)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tOWNER\tREQ/S\tOF WORKER\tOF CLUSTER")
	for _, k := range rep.Keys {
		fmt.Fprintf(tw, "%q\t%d\t%.1f\t%s\t%s\n", k.Key, k.Owner, k.RequestsPerSecond, percent(k.WorkerShare), percent(k.ClusterShare))
	}
	if len(rep.Keys) == 0 {
		fmt.Fprintln(tw, "(none yet)")
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "WORKER\tREQ/S\tHOTTEST KEY")
	var notes []string
	for _, w := range rep.Workers {
		mark := ""
		if !w.Member {
			mark = "*"
		}
		if w.Error != "" {
			mark += "!"
			notes = append(notes, fmt.Sprintf("! worker %d sent no counts (%s)", w.Index, w.Error))
		}
		fmt.Fprintf(tw, "%d%s\t%.1f\t%s\n", w.Index, mark, w.RequestsPerSecond, percent(w.HotKeyShare))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if rep.MaxErrorShare > 0 {
		fmt.Fprintf(out, "\nshares are within %s of the cluster's requests (Space-Saving, %d keys per worker and 10 s step)\n",
			percent(rep.MaxErrorShare), process.HotKeysCapacity)
	} else {
		fmt.Fprintf(out, "\ncounts are exact: every key seen fits in the summaries (Space-Saving, %d keys per worker and 10 s step)\n", process.HotKeysCapacity)
	}
	for _, n := range notes {
		fmt.Fprintln(out, n)
	}
	return nil
}

// planCommand is olio scale N --dry-run.
func planCommand(ctx context.Context, c *cli.Context, cl *listener.Client, n int) error {
	p, err := cl.PlanScale(ctx, n)
	if err != nil {
		return noAnswer(c, err, false)
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, p)
	}
	out := c.App.Writer
	fmt.Fprintf(out, "olio scale %d --dry-run: from %s to %d, nothing changed\n", n, plural(p.From, "worker"), p.To)
	if p.Mode == descend.KeyStatsOff {
		fmt.Fprintf(out, "keys are not counted (--key-stats off): jump hash would move about %s of the keys\n", percent(p.MovedShare))
		return nil
	}
	fmt.Fprintf(out, "tracked keys: %d, of which %d would change owner\n", p.TrackedKeys, p.MovedKeys)
	fmt.Fprintf(out, "recent requests that would change owner: %s (%s by tracked keys, which carried %s; the rest at jump hash's rate)\n",
		percent(p.MovedShare), percent(p.MovedTrackedShare), percent(p.TrackedShare))
	fmt.Fprintf(out, "imbalance (busiest worker ÷ mean): %.2f now, %.2f expected at %d\n", p.Imbalance, p.ExpectedImbalance, p.To)
	return nil
}

// window prints how far back counts reach: as duration does, in tenths below a second.
func window(sec float64) string {
	if sec < 1 {
		return fmt.Sprintf("%.1fs", sec)
	}
	return duration(sec)
}

// percent prints a share as a percentage with one decimal.
func percent(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }
