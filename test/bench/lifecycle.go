package main

// The rolling scenario: how long a HUP rolling restart of olio's
// demo workers takes under constant load, how many requests it served while
// rolling, how long the most unlucky request was held, and that none failed.
// The helpers that run one `olio serve` and read its log and status are
// shared with the startup scenario (scale.go).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/olio-dev/olio/listener"
	"github.com/olio-dev/olio/test/harness"
)

// scenarios are the values of -scenario; compare is the side-by-side table.
var scenarios = []string{"compare", "rolling", "startup"}

// scenarioDefaults gives the rolling and startup scenarios their own
// defaults for the flags not given on the command line.
func scenarioDefaults(cfg *config, set map[string]bool) {
	if cfg.scenario == "rolling" {
		if !set["workers"] {
			cfg.workers = 8
		}
		if !set["c"] {
			cfg.conns = 16
		}
		if !set["d"] && !set["quick"] {
			cfg.duration = 5 * time.Second
		}
	}
	if cfg.scenario != "compare" && !set["out"] {
		cfg.out = "test/bench/results/" + cfg.scenario + ".md"
	}
}

// rollAfter is how long the load goes on after the roll is done.
const rollAfter = time.Second

// rollTimeout bounds one rolling restart.
const rollTimeout = 2 * time.Minute

// rollSample is what one rolling restart measured.
type rollSample struct {
	Workers int           `json:"workers"`
	Roll    time.Duration `json:"roll_ns"` // HUP → "rolling restart done"
	Served  int           `json:"served"`  // requests answered between the two
	// Errors counts failed requests during the whole load (warm-up, before,
	// roll, after): a rolling restart must cost none.
	Errors     int           `json:"errors"`
	LastError  string        `json:"last_error,omitempty"`
	Before     latencies     `json:"before"`      // the -d window just before the HUP
	During     latencies     `json:"during"`      // requests in flight at any time of the roll
	NewApps    int           `json:"new_apps"`    // workers whose app pid changed
	SameRouter int           `json:"same_router"` // workers whose router pid did not
	Violations int           `json:"violations"`  // keys answered by two indexes
	Keys       int           `json:"keys"`
	RPSBefore  float64       `json:"rps_before"`
	RPSDuring  float64       `json:"rps_during"`
	Stop       time.Duration `json:"stop_ns"`
}

// latencies summarises the successful requests of one phase.
type latencies struct {
	N    int           `json:"n"`
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
}

func summarizeLat(sorted []time.Duration) latencies {
	l := latencies{N: len(sorted), P50: percentile(sorted, 50), P99: percentile(sorted, 99), P999: percentile(sorted, 99.9)}
	if len(sorted) > 0 {
		l.Max = sorted[len(sorted)-1]
	}
	return l
}

// runRolling starts `olio serve --workers N` once per round, loads it with
// cfg.conns closed-loop keep-alive connections (a random key per request),
// sends the master SIGHUP and measures the roll.
func runRolling(ctx context.Context, b *bench, root string) error {
	cfg := b.cfg
	load0 := loadAvg()
	fmt.Fprintf(os.Stderr, "rolling restart of %d workers under %d connections, %d rounds; load average %s\n", cfg.workers, cfg.conns, cfg.rounds, load0)
	var samples []rollSample
	for round := 0; round < cfg.rounds; round++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := rollOnce(ctx, b)
		if err != nil {
			return fmt.Errorf("round %d: %w", round+1, err)
		}
		samples = append(samples, s)
		fmt.Fprintf(os.Stderr, "round %d/%d: roll %s, %d served, %d errors, max %s (before %s), %d/%d new apps\n",
			round+1, cfg.rounds, fmtDur(float64(s.Roll)), s.Served, s.Errors, fmtDur(float64(s.During.Max)), fmtDur(float64(s.Before.Max)), s.NewApps, s.Workers)
	}
	meta := reportMeta{
		date:    time.Now(),
		machine: describeMachine(),
		commit:  gitDescribe(root),
		settings: fmt.Sprintf("olio serve --workers %d (demo app); %d keep-alive connections, closed loop, random key of %d per request; %v warm-up, %v before the HUP, %v after the roll; load average %s before, %s after",
			cfg.workers, cfg.conns, cfg.keys, cfg.warmup, cfg.duration, rollAfter, load0, loadAvg()),
	}
	report := renderRolling(meta, samples)
	fmt.Print(report)
	return writeReport(root, cfg.out, report, samples)
}

// rollOnce is one round: start, load, HUP, wait for the roll, check, stop.
func rollOnce(ctx context.Context, b *bench) (rollSample, error) {
	cfg := b.cfg
	s := rollSample{Workers: cfg.workers}
	o, err := startServe(ctx, b, cfg.workers)
	if err != nil {
		return s, err
	}
	defer o.stop()
	if err := o.waitSettled(ctx); err != nil {
		return s, err
	}
	st0, err := o.Status(ctx)
	if err != nil {
		return s, err
	}

	g := newGenerator(target{addrs: []string{o.Addr}}, workloads[0], cfg.conns, cfg.keys)
	defer g.close()
	l := startTimedLoad(ctx, g)
	defer l.stop()
	if err := pause(ctx, o.proc, cfg.warmup+cfg.duration); err != nil {
		return s, err
	}
	hup, done, err := o.roll(ctx)
	if err != nil {
		return s, err
	}
	if err := pause(ctx, o.proc, rollAfter); err != nil {
		return s, err
	}
	recs := l.stop()

	start := l.started
	s.Roll = done.Sub(hup)
	ph := classify(recs, hup.Sub(start)-cfg.duration, hup.Sub(start), done.Sub(start))
	s.Before, s.During = summarizeLat(ph.before), summarizeLat(ph.during)
	s.Served = ph.served
	s.RPSBefore = float64(len(ph.before)) / cfg.duration.Seconds()
	if s.Roll > 0 {
		s.RPSDuring = float64(ph.served) / s.Roll.Seconds()
	}
	s.Errors, s.LastError = ph.errs, ph.lastErr
	s.Violations, s.Keys = g.affinity().violations()

	st1, err := o.Status(ctx)
	if err != nil {
		return s, err
	}
	s.NewApps, s.SameRouter = comparePids(st0, st1)
	t0 := time.Now()
	o.stop()
	s.Stop = time.Since(t0)
	if s.Errors > 0 {
		fmt.Fprintf(os.Stderr, "  %d failed requests, last: %s\n", s.Errors, s.LastError)
	}
	return s, nil
}

// roll sends olio SIGHUP and waits for the rolling restart to end: it returns when the
// signal was sent and when the roll was done.
func (o *served) roll(ctx context.Context) (hup, done time.Time, _ error) {
	hup = time.Now()
	if err := syscall.Kill(o.proc.Pid, syscall.SIGHUP); err != nil {
		return hup, time.Time{}, fmt.Errorf("SIGHUP: %w", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, rollTimeout)
	line, err := o.log.wait(waitCtx, o.proc, func(line string) bool {
		return strings.Contains(line, `msg="rolling restart done"`) || strings.Contains(line, `msg="rolling restart stopped"`)
	})
	cancel()
	seen := time.Now()
	if err != nil {
		return hup, time.Time{}, fmt.Errorf("waiting for the rolling restart: %w", err)
	}
	if strings.Contains(line, "stopped") {
		return hup, time.Time{}, fmt.Errorf("the rolling restart failed: %s", line)
	}
	// The log's own timestamp (ms) is closer to the truth than the moment the
	// poll saw the line.
	done = seen
	if t, ok := logTime(line); ok && t.After(hup) && t.Before(seen) {
		done = t
	}
	return hup, done, nil
}

// comparePids counts the workers whose app pid is new (and not 0) and whose
// router pid is unchanged between two status snapshots.
func comparePids(before, after *listener.Status) (newApps, sameRouters int) {
	old := map[int]listener.WorkerStatus{}
	for _, w := range before.Workers {
		old[w.Index] = w
	}
	for _, w := range after.Workers {
		o, ok := old[w.Index]
		if !ok {
			continue
		}
		if w.AppPID != 0 && w.AppPID != o.AppPID {
			newApps++
		}
		if w.RouterPID != 0 && w.RouterPID == o.RouterPID {
			sameRouters++
		}
	}
	return newApps, sameRouters
}

// reqRecord is one request of a timed load, times relative to its start.
type reqRecord struct {
	at  time.Duration // when it was sent
	lat time.Duration
	err error
}

// timedLoad keeps every connection of a generator busy, closed loop, until
// stopped, and records when each request was sent: unlike closedLoop, the
// phases (before, during, after the roll) are cut afterwards from one
// uninterrupted load.
type timedLoad struct {
	started time.Time
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	recs    [][]reqRecord // per slot

	once sync.Once
	all  []reqRecord
}

// maxTimedRecords bounds the records of one timed load (~40 MB).
const maxTimedRecords = 1 << 20

func startTimedLoad(ctx context.Context, g *generator) *timedLoad {
	ctx, cancel := context.WithCancel(ctx)
	l := &timedLoad{started: time.Now(), cancel: cancel, recs: make([][]reqRecord, len(g.slots))}
	per := maxTimedRecords / len(g.slots)
	for i, s := range g.slots {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			recs := make([]reqRecord, 0, 1<<12)
			for ctx.Err() == nil && len(recs) < per {
				t0 := time.Now()
				err := g.do(s)
				recs = append(recs, reqRecord{at: t0.Sub(l.started), lat: time.Since(t0), err: err})
			}
			l.recs[i] = recs
		}()
	}
	return l
}

// stop ends the load, waits for the requests in flight and returns every
// record. Safe to call more than once.
func (l *timedLoad) stop() []reqRecord {
	l.once.Do(func() {
		l.cancel()
		l.wg.Wait()
		for _, r := range l.recs {
			l.all = append(l.all, r...)
		}
	})
	return l.all
}

// phases is a timed load cut around a roll.
type phases struct {
	before  []time.Duration // sorted latencies of the requests sent and answered in [from, hup)
	during  []time.Duration // sorted latencies of the requests in flight at any time in [hup, done]
	served  int             // requests answered in (hup, done]
	errs    int             // failed requests, all the load
	lastErr string
}

// classify cuts records into phases; from, hup and done are relative to the
// load's start.
func classify(recs []reqRecord, from, hup, done time.Duration) phases {
	var p phases
	for _, r := range recs {
		end := r.at + r.lat
		if r.err != nil {
			p.errs++
			p.lastErr = r.err.Error()
			continue
		}
		if r.at >= from && end < hup {
			p.before = append(p.before, r.lat)
		}
		if end >= hup && r.at <= done {
			p.during = append(p.during, r.lat)
			if end > hup && end <= done {
				p.served++
			}
		}
	}
	slices.Sort(p.before)
	slices.Sort(p.during)
	return p
}

// renderRolling is the rolling scenario's markdown report.
func renderRolling(meta reportMeta, ss []rollSample) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## olio rolling restart — %s\n\n", meta.date.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- machine: %s\n- olio: %s\n- run: %s\n\n", meta.machine, meta.commit, meta.settings)
	b.WriteString("| round | HUP → done | served during | req/s before / during | failed | p50 before / during | p99 before / during | p99.9 before / during | max before / during | new app pids | routers kept | affinity violations |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	row := func(name string, roll, served, rpsB, rpsD, errs float64, before, during [5]float64, newApps, kept string, viol string) {
		fmt.Fprintf(&b, "| %s | %s | %.0f | %s / %s | %.0f | %s / %s | %s / %s | %s / %s | %s / %s | %s | %s | %s |\n",
			name, fmtDur(roll), served, fmtRate(rpsB), fmtRate(rpsD), errs,
			fmtDur(before[0]), fmtDur(during[0]), fmtDur(before[1]), fmtDur(during[1]),
			fmtDur(before[2]), fmtDur(during[2]), fmtDur(before[3]), fmtDur(during[3]), newApps, kept, viol)
	}
	lat := func(l latencies) [5]float64 {
		return [5]float64{float64(l.P50), float64(l.P99), float64(l.P999), float64(l.Max), float64(l.N)}
	}
	errs := 0
	for i, s := range ss {
		errs += s.Errors
		row(strconv.Itoa(i+1), float64(s.Roll), float64(s.Served), s.RPSBefore, s.RPSDuring, float64(s.Errors),
			lat(s.Before), lat(s.During), fmt.Sprintf("%d/%d", s.NewApps, s.Workers), fmt.Sprintf("%d/%d", s.SameRouter, s.Workers),
			fmt.Sprintf("%d / %d keys", s.Violations, s.Keys))
	}
	if len(ss) > 1 {
		med := func(f func(rollSample) float64) float64 { return medianOf(ss, f) }
		var before, during [5]float64
		for k := range 4 {
			before[k] = med(func(s rollSample) float64 { return lat(s.Before)[k] })
			during[k] = med(func(s rollSample) float64 { return lat(s.During)[k] })
		}
		allNew, allKept, viol := true, true, 0
		for _, s := range ss {
			allNew = allNew && s.NewApps == s.Workers
			allKept = allKept && s.SameRouter == s.Workers
			viol += s.Violations
		}
		row("**median**", med(func(s rollSample) float64 { return float64(s.Roll) }),
			med(func(s rollSample) float64 { return float64(s.Served) }),
			med(func(s rollSample) float64 { return s.RPSBefore }), med(func(s rollSample) float64 { return s.RPSDuring }),
			float64(errs), before, during, yesNo(allNew, "all", "NOT all"), yesNo(allKept, "all", "NOT all"), fmt.Sprintf("%d in all", viol))
	}
	b.WriteString(`
How to read it: one fresh olio per round. "HUP → done" runs from the SIGHUP
to the master's log line "rolling restart done" (its own millisecond
timestamp). "served during" counts the requests answered in that interval;
the latency columns compare the requests of the window just before the HUP
with every request in flight at any moment of the roll, so the max "during"
is the longest a request was held while its worker's app was switched.
failed is every failed request of the round, warm-up to end (the last row:
the sum). new app pids and routers kept compare olio's status before
and after (a rolling restart replaces apps, not routers). The load generator
shares the machine's cores with olio.
`)
	return b.String()
}

func yesNo(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}

// writeReport writes the report (and the raw samples as JSON beside it) to
// out, relative to the module root; "" writes nothing.
func writeReport(root, out, report string, raw any) error {
	if out == "" {
		return nil
	}
	if !filepath.IsAbs(out) {
		out = filepath.Join(root, out)
	}
	return writeResults(out, report, raw)
}

// served is one `olio serve` with its demo app, started by the scenarios.
type served struct {
	*harness.Serve
	workers int
	proc    *harness.Child
	log     *logWatch
	started time.Time // just before the exec
}

// startServe runs `olio serve --workers N` (demo app) with its control
// socket and a known secret in the temp dir.
func startServe(ctx context.Context, b *bench, workers int, extra ...string) (*served, error) {
	s, err := harness.NewServe(b.dir)
	if err != nil {
		return nil, err
	}
	o := &served{Serve: s, workers: workers, started: time.Now()}
	c, err := b.procs.Start(fmt.Sprintf("olio serve --workers %d", workers), s.Args(b.olio, workers, extra...), appEnv(), s.Log)
	if err != nil {
		return nil, err
	}
	o.proc, o.log = c, &logWatch{path: s.Log}
	logf(b.cfg, "started olio pid %d on %s", c.Pid, o.Addr)
	return o, nil
}

// waitSettled waits until the status shows every worker ready.
func (o *served) waitSettled(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if _, err := o.WaitSettled(ctx, o.workers, nil, o.proc.Done()); err != nil {
		if errors.Is(err, harness.ErrExited) {
			return o.proc.ExitError()
		}
		return fmt.Errorf("waiting for every worker ready: %w", err)
	}
	return nil
}

// readyLine waits for the master's "all workers ready" and returns that line
// (the startup scenario measures its time and its startup= field).
func (o *served) readyLine(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	line, err := o.log.wait(ctx, o.proc, func(line string) bool {
		return strings.Contains(line, `msg="all workers ready"`)
	})
	if err != nil {
		return "", fmt.Errorf("waiting for all workers ready: %w", err)
	}
	return line, nil
}

// stop stops olio and everything below it (idempotent).
func (o *served) stop() { o.proc.Stop(stopGrace) }

// logWatch follows a log file as it grows.
type logWatch struct {
	path    string
	off     int64
	partial []byte // an unfinished last line
}

// lines returns the complete lines appended since the last call.
func (w *logWatch) lines() ([]string, error) {
	f, err := os.Open(w.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(w.off, io.SeekStart); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	w.off += int64(len(data))
	return w.split(data), nil
}

// split adds data to the unfinished line and returns the lines it completes.
func (w *logWatch) split(data []byte) []string {
	data = append(w.partial, data...)
	last := bytes.LastIndexByte(data, '\n')
	w.partial = append([]byte(nil), data[last+1:]...)
	if last < 0 {
		return nil
	}
	return strings.Split(string(data[:last]), "\n")
}

// logPoll is how often wait reads the log.
const logPoll = 5 * time.Millisecond

// errLogLine is returned by wait when ctx ends before the line is logged.
var errLogLine = errors.New("line not logged")

// wait polls the log until a new line matches, c exits or ctx ends.
func (w *logWatch) wait(ctx context.Context, c *harness.Child, match func(string) bool) (string, error) {
	for {
		lines, err := w.lines()
		if err != nil {
			return "", err
		}
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
		}
		if err := pause(ctx, c, logPoll); err != nil {
			if ctx.Err() != nil {
				return "", fmt.Errorf("%w: %w", errLogLine, err)
			}
			return "", err // c exited: the error has its log's tail
		}
	}
}

// logValue returns the value of key in a logfmt line as slog's text handler
// writes it (key=value or key="quoted value").
func logValue(line, key string) (string, bool) {
	for i := 0; ; {
		j := strings.Index(line[i:], key+"=")
		if j < 0 {
			return "", false
		}
		j += i
		if j > 0 && line[j-1] != ' ' {
			i = j + len(key) + 1
			continue
		}
		v := line[j+len(key)+1:]
		if strings.HasPrefix(v, `"`) {
			q, err := strconv.QuotedPrefix(v)
			if err != nil {
				return "", false
			}
			u, err := strconv.Unquote(q)
			return u, err == nil
		}
		if k := strings.IndexByte(v, ' '); k >= 0 {
			v = v[:k]
		}
		return v, true
	}
}

// logTime is the time= of a log line.
func logTime(line string) (time.Time, bool) {
	v, ok := logValue(line, "time")
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil
}
