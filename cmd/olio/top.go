package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/listener"
)

// topWindow is how far back olio top's rates and latencies reach.
const topWindow = 10 * time.Second

func topCommand() *cli.Command {
	return &cli.Command{
		Name:  "top",
		Usage: "a live view of a running olio: each worker's load, latency and memory",
		Description: `Refreshes every --interval over the control socket (no --metrics needed): per worker
its state, requests/s, requests in flight, p50 and p99 latency, the share of the requests
it received that it forwarded to their owner, connections handed off per second, resident
memory, restarts and upgraded connections open; a header with the cluster's totals, its
epoch and any hand-over in progress; the hottest keys when key stats are on. Rates and
latencies are over the last 10 s (less just after starting). On a terminal the view is
redrawn in place (colour unless NO_COLOR is set); elsewhere each frame is plain lines.
--once prints one frame (measured over one --interval) and exits; --json prints frames
as JSON, one object a line.`,
		Flags: []cli.Flag{
			controlFlag(),
			timeoutFlag(2*listener.StatsTimeout+5*time.Second, "each snapshot"),
			&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "refresh every `D`"},
			&cli.BoolFlag{Name: "once", Usage: "print one frame and exit"},
			&cli.BoolFlag{Name: "json", Usage: "print each frame as one JSON object a line: {\"time\", \"epoch\", \"totals\", \"workers\": [{\"index\", \"state\", \"requests_per_second\", \"p50_seconds\", \"p99_seconds\", …}], \"keys\"}"},
			&cli.IntFlag{Name: "keys", Value: 5, Usage: "show the `N` hottest keys (0: none)"},
		},
		Action: top,
	}
}

func top(c *cli.Context) error {
	interval := c.Duration("interval")
	if interval <= 0 {
		return badUsage("--interval %s: must be more than 0, like 1s", interval)
	}
	if c.Int("keys") < 0 {
		return badUsage("--keys %d: give 0 (none) or more", c.Int("keys"))
	}
	if c.Duration("timeout") <= 0 {
		return badUsage("--timeout %s: must be more than 0, like 9s", c.Duration("timeout"))
	}
	cl, err := client(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := c.App.Writer
	view := topView{json: c.Bool("json"), tty: isTerminal(out)}
	view.colour = view.tty && os.Getenv("NO_COLOR") == ""
	var snaps []*listener.TopSnapshot // the last topWindow of them, oldest first
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		snap, keys, err := topSnapshot(ctx, c, cl)
		if err != nil {
			if ctx.Err() != nil && c.Context.Err() == nil {
				return nil // interrupted: the operator is done watching
			}
			return noAnswer(c, err, false)
		}
		snaps = append(snaps, snap)
		for len(snaps) > 2 && snap.Time.Sub(snaps[1].Time) >= topWindow {
			snaps = snaps[1:]
		}
		if !c.Bool("once") || len(snaps) > 1 {
			if err := view.write(out, newTopFrame(snaps[0], snap, keys)); err != nil {
				return err
			}
			if c.Bool("once") {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// topSnapshot takes one snapshot, and the hottest keys when --keys asks for them and olio
// counts keys.
func topSnapshot(ctx context.Context, c *cli.Context, cl *listener.Client) (*listener.TopSnapshot, *listener.KeysReport, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Duration("timeout"))
	defer cancel()
	snap, err := cl.Top(ctx)
	if err != nil {
		return nil, nil, err
	}
	var keys *listener.KeysReport
	if n := c.Int("keys"); n > 0 {
		if keys, err = cl.Keys(ctx, n); err != nil || keys.Mode == descend.KeyStatsOff {
			keys = nil // keys are extra: the view goes on without them
		}
	}
	return snap, keys, nil
}

// topFrame is one frame of olio top, as --json prints it.
type topFrame struct {
	Time          time.Time   `json:"time"`
	PID           int         `json:"pid"`
	Listen        string      `json:"listen"`
	Members       int         `json:"members"`
	Ready         int         `json:"ready"`
	Epoch         uint64      `json:"epoch"`
	UptimeSeconds float64     `json:"uptime_seconds"`
	WindowSeconds float64     `json:"window_seconds"` // what the rates and latencies cover
	Handover      string      `json:"handover,omitempty"`
	Totals        topWorker   `json:"totals"` // index -1; latencies over every worker's requests
	Workers       []topWorker `json:"workers"`
	// Keys are the hottest keys (over key stats' own window, the last minute), absent when
	// key stats are off.
	Keys []listener.HotKey `json:"keys,omitempty"`
}

// topWorker is one worker's row: rates over the frame's window, the rest as of its end.
type topWorker struct {
	Index             int     `json:"index"`
	State             string  `json:"state,omitempty"`
	Member            bool    `json:"member"`
	RouterPID         int     `json:"router_pid,omitempty"`
	AppPID            int     `json:"app_pid,omitempty"`
	RequestsPerSecond float64 `json:"requests_per_second"` // answered by its app
	InFlight          int64   `json:"in_flight"`
	// P50Seconds and P99Seconds are the latencies of the requests its app answered in the
	// window (bucket bounds interpolated); null when it answered none.
	P50Seconds *float64 `json:"p50_seconds"`
	P99Seconds *float64 `json:"p99_seconds"`
	// ForwardedShare is the share of the requests it received from clients that it sent on
	// to their owner; HandedOffPerSecond the connections it passed to their owner.
	ForwardedShare     float64 `json:"forwarded_share"`
	HandedOffPerSecond float64 `json:"handed_off_per_second"`
	RSSBytes           uint64  `json:"rss_bytes"`
	Restarts           int     `json:"restarts"`
	UpgradesOpen       int64   `json:"upgrades_open"` // upgraded connections (WebSocket) open now
	// Running totals since its router started, as olio status shows them.
	Served    uint64 `json:"served"`
	Forwarded uint64 `json:"forwarded"`
	HandedOff uint64 `json:"handed_off"`
	Upgraded  uint64 `json:"upgraded"`
}

// newTopFrame compares two snapshots (then may be now: no rates yet).
func newTopFrame(then, now *listener.TopSnapshot, keys *listener.KeysReport) topFrame {
	st := now.Status
	f := topFrame{Time: now.Time, PID: st.PID, Listen: st.Listen, Members: st.Members, Ready: st.Ready,
		Epoch: st.Epoch, UptimeSeconds: st.UptimeSeconds, Handover: now.Handover, Workers: []topWorker{}}
	secs := now.Time.Sub(then.Time).Seconds()
	f.WindowSeconds = secs
	before := map[int]int{} // worker index → its position in then
	for i, w := range then.Status.Workers {
		before[w.Index] = i
	}
	tot := topWorker{Index: -1, Member: true}
	var totHist descend.Histogram
	var arrived, forwarded float64
	for i, ws := range now.Status.Workers {
		tc := now.Workers[i]
		w := topWorker{Index: ws.Index, State: ws.State, Member: ws.Member, RouterPID: ws.RouterPID, AppPID: ws.AppPID,
			InFlight: ws.InFlight, RSSBytes: ws.RSSBytes, Restarts: ws.Restarts, UpgradesOpen: tc.UpgradesOpen,
			Served: ws.Served, Forwarded: ws.Forwarded, HandedOff: ws.HandedOff, Upgraded: tc.Upgraded}
		if ws.CrashLooping {
			w.State += " (crash-looping)"
		}
		// The counters since then; all of now's when the router is new since then.
		d, dc := ws, tc
		if j, ok := before[ws.Index]; ok && then.Status.Workers[j].RouterPID == ws.RouterPID && then.Status.Workers[j].Served <= ws.Served {
			p, pc := then.Status.Workers[j], then.Workers[j]
			d.Served, d.Forwarded, d.ForwardedIn, d.HandedOff = ws.Served-p.Served, sub(ws.Forwarded, p.Forwarded), sub(ws.ForwardedIn, p.ForwardedIn), sub(ws.HandedOff, p.HandedOff)
			dc.Duration = histDelta(tc.Duration, pc.Duration)
		} else if then == now {
			d, dc = listener.WorkerStatus{}, listener.TopCounters{}
		}
		if secs > 0 {
			w.RequestsPerSecond = float64(d.Served) / secs
			w.HandedOffPerSecond = float64(d.HandedOff) / secs
		}
		in := float64(d.Served) - float64(d.ForwardedIn) + float64(d.Forwarded) // from clients, served here or sent on
		if in > 0 {
			w.ForwardedShare = float64(d.Forwarded) / in
		}
		arrived, forwarded = arrived+max(in, 0), forwarded+float64(d.Forwarded)
		w.P50Seconds, w.P99Seconds = quantile(dc.Duration, 0.5), quantile(dc.Duration, 0.99)
		totHist = histSum(totHist, dc.Duration)
		tot.RequestsPerSecond += w.RequestsPerSecond
		tot.HandedOffPerSecond += w.HandedOffPerSecond
		tot.InFlight += w.InFlight
		tot.RSSBytes += w.RSSBytes
		tot.Restarts += w.Restarts
		tot.UpgradesOpen += w.UpgradesOpen
		tot.Served, tot.Forwarded, tot.HandedOff, tot.Upgraded = tot.Served+w.Served, tot.Forwarded+w.Forwarded, tot.HandedOff+w.HandedOff, tot.Upgraded+w.Upgraded
		f.Workers = append(f.Workers, w)
	}
	if arrived > 0 {
		tot.ForwardedShare = forwarded / arrived
	}
	tot.P50Seconds, tot.P99Seconds = quantile(totHist, 0.5), quantile(totHist, 0.99)
	f.Totals = tot
	if keys != nil {
		f.Keys = keys.Keys
	}
	return f
}

func sub(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return a - b
}

// histDelta is the requests of now that came after then (the same bounds).
func histDelta(now, then descend.Histogram) descend.Histogram {
	if len(now.Counts) != len(then.Counts) || now.Count < then.Count {
		return now
	}
	d := descend.Histogram{Bounds: now.Bounds, Counts: make([]uint64, len(now.Counts)), Count: now.Count - then.Count, Sum: now.Sum - then.Sum}
	for i := range now.Counts {
		d.Counts[i] = sub(now.Counts[i], then.Counts[i])
	}
	return d
}

// histSum adds b to a (a may be empty; different bounds leave a as it is).
func histSum(a, b descend.Histogram) descend.Histogram {
	if len(a.Counts) == 0 {
		return descend.Histogram{Bounds: b.Bounds, Counts: append([]uint64(nil), b.Counts...), Count: b.Count, Sum: b.Sum}
	}
	if len(a.Counts) != len(b.Counts) {
		return a
	}
	for i := range b.Counts {
		a.Counts[i] += b.Counts[i]
	}
	a.Count, a.Sum = a.Count+b.Count, a.Sum+b.Sum
	return a
}

// quantile is the q-quantile of h's requests, interpolated linearly within its bucket as
// Prometheus' histogram_quantile does; nil when h has none. Above the last bound it is the
// last bound.
func quantile(h descend.Histogram, q float64) *float64 {
	if h.Count == 0 || len(h.Bounds) == 0 {
		return nil
	}
	rank := q * float64(h.Count)
	lo, below := 0.0, uint64(0)
	for i, bound := range h.Bounds {
		if c := h.Counts[i]; float64(c) >= rank && c > below {
			v := lo + (bound-lo)*(rank-float64(below))/float64(c-below)
			return &v
		}
		lo, below = bound, h.Counts[i]
	}
	v := h.Bounds[len(h.Bounds)-1]
	return &v
}

// topView writes frames: JSON, plain lines, or a screen redrawn in place (tty).
type topView struct {
	json, tty, colour bool
}

func (v topView) write(out io.Writer, f topFrame) error {
	if v.json {
		return printJSONLine(out, f)
	}
	var b strings.Builder
	if v.tty {
		b.WriteString("\033[H\033[2J") // home, clear the screen
	}
	if err := writeTopFrame(&b, f, v.colour); err != nil {
		return err
	}
	if !v.tty {
		b.WriteString("\n") // a blank line between frames
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// writeTopFrame renders f as text, states coloured when colour is set.
func writeTopFrame(out io.Writer, f topFrame, colour bool) error {
	t := f.Totals
	fmt.Fprintf(out, "olio pid %d on %s: %s, %d ready, epoch %d, up %s — %s\n", f.PID, f.Listen,
		plural(f.Members, "worker"), f.Ready, f.Epoch, duration(f.UptimeSeconds), f.Time.Format("15:04:05"))
	fmt.Fprintf(out, "last %s: %.1f req/s, %d in flight, p50 %s, p99 %s, %s forwarded, %.1f handed off/s, %s RSS, %d restarts, %d upgraded open\n",
		window(f.WindowSeconds), t.RequestsPerSecond, t.InFlight, latency(t.P50Seconds), latency(t.P99Seconds),
		percent(t.ForwardedShare), t.HandedOffPerSecond, bytesIEC(t.RSSBytes), t.Restarts, t.UpgradesOpen)
	if f.Handover != "" {
		fmt.Fprintf(out, "hand-over in progress: %s\n", f.Handover)
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tSTATE\tREQ/S\tIN-FLIGHT\tP50\tP99\tFWD\tHANDOFF/S\tRSS\tRESTARTS\tUPGRADED")
	for _, w := range f.Workers {
		mark := ""
		if !w.Member {
			mark = "*"
		}
		// tabwriter counts the colour codes as text: pad the state before colouring it.
		state := fmt.Sprintf("%-*s", stateWidth(f.Workers), w.State)
		if colour {
			state = colourState(w.State, state)
		}
		fmt.Fprintf(tw, "%d%s\t%s\t%.1f\t%d\t%s\t%s\t%s\t%.1f\t%s\t%d\t%d\n", w.Index, mark, state, w.RequestsPerSecond, w.InFlight,
			latency(w.P50Seconds), latency(w.P99Seconds), percent(w.ForwardedShare), w.HandedOffPerSecond, bytesIEC(w.RSSBytes), w.Restarts, w.UpgradesOpen)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(f.Keys) > 0 {
		fmt.Fprintln(out)
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "HOTTEST KEYS (last minute)\tOWNER\tREQ/S\tOF CLUSTER")
		for _, k := range f.Keys {
			fmt.Fprintf(tw, "%q\t%d\t%.1f\t%s\n", k.Key, k.Owner, k.RequestsPerSecond, percent(k.ClusterShare))
		}
		return tw.Flush()
	}
	return nil
}

func stateWidth(ws []topWorker) int {
	n := len("STATE")
	for _, w := range ws {
		n = max(n, len(w.State))
	}
	return n
}

// colourState wraps padded, w's padded state, in green (ready), yellow (on its way) or
// red (failing).
func colourState(state, padded string) string {
	code := "33" // yellow: starting, stopping
	switch {
	case strings.Contains(state, "crash") || strings.HasPrefix(state, "backoff") || strings.HasPrefix(state, "stopped"):
		code = "31"
	case state == string(descend.StateReady):
		code = "32"
	}
	return "\033[" + code + "m" + padded + "\033[0m"
}

// latency prints seconds as a duration rounded to three digits, "-" for none.
func latency(s *float64) string {
	if s == nil {
		return "-"
	}
	d := time.Duration(*s * float64(time.Second))
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

// printJSONLine writes v as one line of JSON.
func printJSONLine(out io.Writer, v any) error {
	return json.NewEncoder(out).Encode(v)
}
