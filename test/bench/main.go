// Command bench measures olio side by side with the same apps served
// directly and behind HAProxy and nginx hash balancing.
//
//	go run ./test/bench            # full run: 3 rounds, 10 s per throughput run
//	go run ./test/bench -quick     # smoke run: 1 round, 3 s
//	go run ./test/bench -scenario rolling   # HUP under load (lifecycle.go)
//	go run ./test/bench -scenario startup   # 8/16/64 workers: start, RSS, mesh (scale.go)
//
// It builds olio, starts four `olio demo` apps for the direct, HAProxy and
// nginx setups (olio runs its own), drives every setup with the same Go load
// generator in two workloads (a random key per request, one key per
// connection), interleaves the setups over the rounds and prints a markdown
// table of the medians, also written to test/bench/results/latest.md. Every
// child process is stopped and the temp dir removed on exit, Ctrl-C included.
// Everything listens on 127.0.0.1 only. test/bench/setup.sh installs wrk,
// HAProxy and nginx.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/olio-dev/olio/test/harness"
)

// config is the command line.
type config struct {
	scenario  string // compare (the side-by-side table), rolling, startup
	sizes     []int  // worker counts of the startup scenario
	setups    []string
	workloads []string
	workers   int
	conns     int
	keys      int
	duration  time.Duration // closed-loop throughput run
	fixedDur  time.Duration // each fixed-rate run
	warmup    time.Duration
	rounds    int
	rates     []int // percent of direct's maximum
	wrk       bool
	threads   int // HAProxy threads, nginx worker processes
	olio      string
	before    string // an earlier olio binary, for the olio*-before setups
	out       string
	verbose   bool
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var (
		cfg               config
		setupList, wlList string
		rateList          string
		sizeList          string
		quick             bool
	)
	fs.StringVar(&cfg.scenario, "scenario", "compare", "compare: olio side by side with direct, HAProxy and nginx; rolling: a HUP rolling restart under load (-workers 8, -c 16, -d 5s before it, unless given); startup: start-to-ready, router RSS and the yamux mesh's memory for each of -sizes")
	fs.StringVar(&sizeList, "sizes", "8,16,64", "worker counts of -scenario startup, comma-separated")
	fs.StringVar(&setupList, "setups", "direct,olio4,olio1,haproxy,nginx", "setups to run, comma-separated: direct, olio4 (--workers N), olio1, olio4-nohandoff (--handoff=false), olio4-accesslog (--access-log FILE), olio4-embedded (--embedded --workers N), olio1-embedded, olio1-before, olio4-before and olio4-embedded-before (the -before binary), haproxy, nginx; the prototypes of test/bench/engines: fast-proxy, nethttp-proxy, fast-public, fast-app")
	fs.StringVar(&wlList, "workloads", "random,conn", "workloads, comma-separated: random (a random key per request), conn (one key per connection)")
	fs.IntVar(&cfg.workers, "workers", 4, "apps behind direct, HAProxy and nginx, and olio's --workers for olio4")
	fs.IntVar(&cfg.conns, "c", 64, "connections")
	fs.IntVar(&cfg.keys, "keys", 10000, "key space of the random workload")
	fs.DurationVar(&cfg.duration, "d", 10*time.Second, "duration of each throughput run")
	fs.DurationVar(&cfg.fixedDur, "fixed-d", 5*time.Second, "duration of each fixed-rate latency run")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured load before each setup's runs")
	fs.IntVar(&cfg.rounds, "rounds", 3, "rounds; setups are interleaved within each, and the report shows medians")
	fs.StringVar(&rateList, "rates", "25,50,75", "fixed rates, in percent of direct's maximum (empty: none)")
	fs.BoolVar(&cfg.wrk, "wrk", true, "cross-check the proxied setups' throughput with wrk, if installed")
	fs.IntVar(&cfg.threads, "threads", runtime.NumCPU(), "HAProxy threads and nginx worker processes")
	fs.StringVar(&cfg.olio, "olio", "", "use this olio binary instead of building ./cmd/olio")
	fs.StringVar(&cfg.before, "before", "", "an earlier olio binary, run by the olio1-before, olio4-before and olio4-embedded-before setups (same-run before/after ratios)")
	fs.StringVar(&cfg.out, "out", "test/bench/results/latest.md", "also write the report here (relative to the module root; empty: don't); a .json with the raw samples goes beside it")
	fs.BoolVar(&quick, "quick", false, "smoke run: 1 round, 3 s throughput, 2 s per fixed rate (flags given explicitly win)")
	fs.BoolVar(&cfg.verbose, "v", false, "log each step")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if quick {
		if !set["rounds"] {
			cfg.rounds = 1
		}
		if !set["d"] {
			cfg.duration = 3 * time.Second
		}
		if !set["fixed-d"] {
			cfg.fixedDur = 2 * time.Second
		}
		if !set["warmup"] {
			cfg.warmup = 500 * time.Millisecond
		}
	}
	scenarioDefaults(&cfg, set) // lifecycle.go
	for _, n := range splitList(sizeList) {
		w, err := strconv.Atoi(n)
		if err != nil || w < 1 || w > 64 {
			return nil, fmt.Errorf("-sizes: %q is not a worker count in 1..64", n)
		}
		cfg.sizes = append(cfg.sizes, w)
	}
	cfg.setups = splitList(setupList)
	cfg.workloads = splitList(wlList)
	for _, r := range splitList(rateList) {
		p, err := strconv.Atoi(strings.TrimSuffix(r, "%"))
		if err != nil || p <= 0 || p > 200 {
			return nil, fmt.Errorf("-rates: %q is not a percentage in 1..200", r)
		}
		cfg.rates = append(cfg.rates, p)
	}
	return &cfg, cfg.validate()
}

func (c *config) validate() error {
	if !slices.Contains(scenarios, c.scenario) {
		return fmt.Errorf("-scenario: unknown scenario %q (want %s)", c.scenario, strings.Join(scenarios, ", "))
	}
	for _, id := range c.setups {
		if !slices.ContainsFunc(setups, func(s setup) bool { return s.id == id }) {
			return fmt.Errorf("-setups: unknown setup %q (want one of %s)", id, setupIDs())
		}
	}
	for _, name := range c.workloads {
		if !slices.ContainsFunc(workloads, func(w workload) bool { return w.name == name }) {
			return fmt.Errorf("-workloads: unknown workload %q (want random, conn)", name)
		}
	}
	switch {
	case len(c.setups) == 0 || len(c.workloads) == 0:
		return errors.New("nothing to run: -setups and -workloads must not be empty")
	case c.workers < 1 || c.workers > 64:
		return fmt.Errorf("-workers %d: want 1..64", c.workers)
	case c.conns < 1 || c.conns > 4096:
		return fmt.Errorf("-c %d: want 1..4096", c.conns)
	case c.keys < 1:
		return fmt.Errorf("-keys %d: want at least 1", c.keys)
	case c.duration < 500*time.Millisecond || c.duration > 10*time.Minute:
		return fmt.Errorf("-d %v: want 500ms..10m", c.duration)
	case len(c.rates) > 0 && (c.fixedDur < 500*time.Millisecond || c.fixedDur > 10*time.Minute):
		return fmt.Errorf("-fixed-d %v: want 500ms..10m", c.fixedDur)
	case c.warmup < 0 || c.warmup > time.Minute:
		return fmt.Errorf("-warmup %v: want 0..1m", c.warmup)
	case c.rounds < 1 || c.rounds > 20:
		return fmt.Errorf("-rounds %d: want 1..20", c.rounds)
	case c.threads < 1:
		return fmt.Errorf("-threads %d: want at least 1", c.threads)
	case c.before == "" && slices.ContainsFunc(c.setups, func(id string) bool { return strings.HasSuffix(id, "-before") }):
		return errors.New("the -before setups need -before: an earlier olio binary")
	case c.scenario == "startup" && len(c.sizes) == 0:
		return errors.New("-sizes must not be empty for -scenario startup")
	}
	return nil
}

// setupIDs lists every setup's id, comma-separated.
func setupIDs() string {
	ids := make([]string, len(setups))
	for i, s := range setups {
		ids[i] = s.id
	}
	return strings.Join(ids, ", ")
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	// The first Ctrl-C (or TERM) cancels the run, which then stops its
	// children and removes its temp dir on the way out; a second one kills
	// the children at once.
	ctx, cancel := context.WithCancel(context.Background())
	p := harness.NewProcs()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "bench: interrupted; stopping (again to kill at once)")
		cancel()
		<-sigs
		p.KillAll()
		os.Exit(130)
	}()
	err = run(ctx, cfg, p)
	interrupted := ctx.Err() != nil
	cancel()
	switch {
	case interrupted:
		os.Exit(130)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run does the whole benchmark; every process it started is stopped and its
// temp dir removed when it returns.
func run(ctx context.Context, cfg *config, p *harness.Procs) (err error) {
	root, err := harness.ModuleRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "olio-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p.RemoveOnKill(dir)
	defer p.StopAll(stopGrace)
	// nginx's workers drop root privileges and must reach their temp paths
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if cfg.scenario != "compare" {
		cfg.wrk = false // the scenarios need neither wrk nor the proxies
	} else if err := checkTools(cfg); err != nil {
		return err
	}
	b := &bench{cfg: cfg, procs: p, dir: dir, olio: cfg.olio, example: filepath.Join(dir, "olio-demo")}
	builds := map[string]string{b.example: "./cmd/olio-demo"}
	if b.olio == "" {
		b.olio = filepath.Join(dir, "olio")
		builds[b.olio] = "./cmd/olio"
	}
	if slices.ContainsFunc(cfg.setups, isEngine) {
		b.engines = filepath.Join(dir, "engines")
		builds[b.engines] = "./test/bench/engines"
	}
	for bin, pkg := range builds {
		logf(cfg, "building %s", pkg)
		if err := harness.Build(ctx, root, pkg, bin); err != nil {
			return err
		}
	}
	switch cfg.scenario {
	case "rolling":
		return runRolling(ctx, b, root) // lifecycle.go
	case "startup":
		return runStartup(ctx, b, root) // scale.go
	}
	return runCompare(ctx, b, root)
}

// runCompare is the compare scenario: every selected setup in turn, each round, under
// every workload, then the side-by-side report.
func runCompare(ctx context.Context, b *bench, root string) error {
	cfg := b.cfg
	order := selected(cfg)
	if slices.ContainsFunc(order, func(s setup) bool { return sharedApps(s.id) }) {
		logf(cfg, "starting %d apps", cfg.workers)
		if err := startApps(ctx, b); err != nil {
			return err
		}
	}
	var wls []workload
	for _, w := range workloads {
		if slices.Contains(cfg.workloads, w.name) {
			wls = append(wls, w)
		}
	}

	load0 := loadAvg()
	res := results{}
	baseline := map[string]float64{} // workload → direct's max req/s, from round 1
	for round := 0; round < cfg.rounds; round++ {
		for _, st := range interleave(order, round) {
			if err := ctx.Err(); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "round %d/%d: %s\n", round+1, cfg.rounds, st.name)
			in, err := st.start(ctx, b)
			if err != nil {
				return fmt.Errorf("%s: %w", st.name, err)
			}
			for _, wl := range wls {
				s, err := measure(ctx, b, st, in, wl, baseline)
				if err != nil {
					in.stop()
					return fmt.Errorf("%s, %s: %w", st.name, wl.name, err)
				}
				if _, ok := baseline[wl.name]; !ok {
					baseline[wl.name] = s.RPS
				}
				res.add(st.id, wl.name, s)
				fmt.Fprintf(os.Stderr, "  %-22s %8.0f req/s  p99 %s  errors %d\n", wl.title, s.RPS, fmtDur(float64(s.P99)), s.Errors)
			}
			in.stop()
		}
	}

	meta := reportMeta{
		date:     time.Now(),
		machine:  describeMachine(),
		software: describeSoftware(cfg.wrk),
		commit:   gitDescribe(root),
		settings: fmt.Sprintf("%d rounds (medians), %d connections, %v per throughput run, %v per fixed rate, %d apps/workers, %d HAProxy threads / nginx workers, %d random keys; load average %s before, %s after",
			cfg.rounds, cfg.conns, cfg.duration, cfg.fixedDur, cfg.workers, cfg.threads, cfg.keys, load0, loadAvg()),
	}
	report := render(meta, order, wls, res)
	fmt.Print(report)
	return writeReport(root, cfg.out, report, res)
}

// measure runs one workload against one running setup: warm-up, a closed-
// loop throughput run (with the layer's CPU and RSS), a wrk cross-check, and
// the fixed-rate latency runs.
func measure(ctx context.Context, b *bench, st setup, in *instance, wl workload, baseline map[string]float64) (sample, error) {
	cfg := b.cfg
	g := newGenerator(in.target, wl, cfg.conns, cfg.keys)
	defer g.close()
	if cfg.warmup > 0 {
		g.closedLoop(ctx, cfg.warmup)
	}

	var cpu0 servingCPU
	if in.layer != nil {
		cpu0 = in.layer.cpu()
	}
	var metrics0 []series
	if in.metrics != "" {
		metrics0, _ = scrape(ctx, in.metrics)
	}
	r := g.closedLoop(ctx, cfg.duration)
	if err := ctx.Err(); err != nil {
		return sample{}, err
	}
	if r.ok == 0 {
		return sample{}, fmt.Errorf("no request succeeded (%d errors, last: %v)", r.errs, r.lastErr)
	}
	if r.errs > 0 {
		logf(cfg, "%s: %d errors, last: %v", st.name, r.errs, r.lastErr)
	}
	s := sample{
		RPS: r.rps(), P50: percentile(r.lat, 50), P99: percentile(r.lat, 99),
		CPUPer10k: -1, ServingCPUPer10k: -1, Forwarded: in.forwarded, Errors: r.errs,
	}
	if in.layer != nil {
		lay, apps := in.layer.cpu().secondsSince(cpu0)
		s.CPUPer10k, s.ServingCPUPer10k = cpuPer10k(in.layer.root > 0, lay, apps, r.ok)
		s.RSS = in.layer.rss()
		s.Procs = in.layer.count()
	}
	if metrics0 != nil {
		if metrics1, err := scrape(ctx, in.metrics); err == nil {
			if share, ok := olioForwarded(metrics0, metrics1); ok {
				s.Forwarded, s.ForwardedMeasured = share, true
			}
		}
	}

	if cfg.wrk && st.proxy {
		if err := s.crossCheck(ctx, b, st, in, wl); err != nil {
			return sample{}, err
		}
	}

	base, ok := baseline[wl.name]
	if !ok {
		base = s.RPS // this setup is the first measured: it is the baseline
	}
	if err := s.fixedRates(ctx, cfg, st, wl, g, base); err != nil {
		return sample{}, err
	}
	s.Violations, s.Keys = g.affinity().violations()
	return s, nil
}

// crossCheck measures the proxied setup's throughput with wrk too; wrk failing is said
// but not an error.
func (s *sample) crossCheck(ctx context.Context, b *bench, st setup, in *instance, wl workload) error {
	cfg := b.cfg
	rps, err := runWrk(ctx, b.dir, "http://"+in.target.addrs[0]+"/", wl, cfg.conns, cfg.threads, cfg.keys, cfg.duration)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fmt.Fprintf(os.Stderr, "  %s: %v\n", st.name, err)
	}
	s.WrkRPS = rps
	return nil
}

// fixedRates runs the fixed-rate latency runs, each at a percentage of base req/s.
func (s *sample) fixedRates(ctx context.Context, cfg *config, st setup, wl workload, g *generator, base float64) error {
	for _, pct := range cfg.rates {
		rate := base * float64(pct) / 100
		if rate < 1 {
			continue
		}
		f := g.fixedRate(ctx, rate, cfg.fixedDur)
		if err := ctx.Err(); err != nil {
			return err
		}
		logf(cfg, "%s %s at %d%% (%.0f req/s): p99 %s, sent %d/%d", st.name, wl.name, pct, rate, fmtDur(float64(percentile(f.lat, 99))), f.sent, f.planned)
		s.Errors += f.errs
		s.Fixed = append(s.Fixed, fixedSample{
			Percent: pct, Rate: rate,
			P50: percentile(f.lat, 50), P99: percentile(f.lat, 99), P999: percentile(f.lat, 99.9),
			Planned: f.planned, Sent: f.sent, Errors: f.errs,
		})
	}
	return nil
}

// selected is the chosen setups in report order, direct first.
func selected(cfg *config) []setup {
	var out []setup
	for _, s := range setups {
		if slices.Contains(cfg.setups, s.id) {
			if strings.HasPrefix(s.id, "olio4") {
				s.name = strings.Replace(s.name, "--workers 4", fmt.Sprintf("--workers %d", cfg.workers), 1)
			}
			out = append(out, s)
		}
	}
	return out
}

// interleave is the order of one round: direct first (the fixed rates are
// fractions of its maximum), the others rotated by one place each round so
// that no setup always runs right after another.
func interleave(order []setup, round int) []setup {
	var first, rest []setup
	for _, s := range order {
		if s.id == "direct" {
			first = append(first, s)
		} else {
			rest = append(rest, s)
		}
	}
	if len(rest) > 0 {
		k := round % len(rest)
		rest = append(rest[k:], rest[:k]...)
	}
	return append(first, rest...)
}

// checkTools fails early, with the fix, when a tool a chosen setup needs is
// missing; wrk alone is optional.
func checkTools(cfg *config) error {
	for _, tool := range []string{"haproxy", "nginx"} {
		if slices.Contains(cfg.setups, tool) {
			if _, err := exec.LookPath(tool); err != nil {
				return fmt.Errorf("%s is not installed: run test/bench/setup.sh, or leave it out of -setups", tool)
			}
		}
	}
	if cfg.wrk {
		if _, err := exec.LookPath("wrk"); err != nil {
			fmt.Fprintln(os.Stderr, "bench: wrk is not installed (test/bench/setup.sh); no wrk cross-check")
			cfg.wrk = false
		}
	}
	return nil
}

func gitDescribe(root string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "unknown commit"
	}
	return "commit " + strings.TrimSpace(string(out))
}

// writeResults writes the markdown report to path and the raw samples as
// JSON beside it.
func writeResults(path, report string, res any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	jsonPath := strings.TrimSuffix(path, filepath.Ext(path)) + ".json"
	if err := os.WriteFile(jsonPath, raw, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s and %s\n", path, jsonPath)
	return nil
}

func logf(cfg *config, format string, args ...any) {
	if cfg.verbose {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}
}
