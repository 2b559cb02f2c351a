package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// sample is what one run of one setup under one workload measured.
type sample struct {
	RPS       float64       `json:"rps"`
	P50       time.Duration `json:"p50_ns"`
	P99       time.Duration `json:"p99_ns"`
	CPUPer10k float64       `json:"cpu_s_per_10k"` // the layer's; -1: no layer (direct)
	// ServingCPUPer10k is the whole serving side's: the layer and its apps
	// (olio's app children; the shared apps behind direct, HAProxy, nginx
	// and the prototypes); -1: not measured.
	ServingCPUPer10k float64 `json:"serving_cpu_s_per_10k"`
	RSS              uint64  `json:"rss_bytes"`
	Procs            int     `json:"procs"`
	Forwarded        float64 `json:"forwarded"` // share; -1: does not apply
	// ForwardedMeasured tells a share read from olio's metrics from the
	// expected (N-1)/N.
	ForwardedMeasured bool          `json:"forwarded_measured"`
	Keys              int           `json:"keys"`
	Violations        int           `json:"violations"`
	Errors            int           `json:"errors"`
	WrkRPS            float64       `json:"wrk_rps"` // 0: not measured
	Fixed             []fixedSample `json:"fixed"`
}

// fixedSample is one fixed-rate run.
type fixedSample struct {
	Percent int           `json:"percent"` // of direct's maximum
	Rate    float64       `json:"rate"`
	P50     time.Duration `json:"p50_ns"`
	P99     time.Duration `json:"p99_ns"`
	P999    time.Duration `json:"p999_ns"`
	Planned int           `json:"planned"`
	Sent    int           `json:"sent"`
	Errors  int           `json:"errors"`
}

// results holds every sample: setup id → workload name → one per round.
type results map[string]map[string][]sample

func (r results) add(setupID, wl string, s sample) {
	if r[setupID] == nil {
		r[setupID] = map[string][]sample{}
	}
	r[setupID][wl] = append(r[setupID][wl], s)
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of sorted
// durations; 0 for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted))-1e-9)) - 1 // 1e-9: 99.9/100*1000 is 999.0000000000001
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// median of xs (the mean of the middle two for an even count); NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// medianOf applies median to one field of every sample.
func medianOf[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	return median(v)
}

// summary is the median of a setup's samples under one workload.
type summary struct {
	rounds                 int
	rps, p50, p99, cpu     float64
	servingCPU             float64 // layer + apps
	rss, forwarded, wrkRPS float64
	procs                  int
	forwardedMeasured      bool // in every round
	violations, keys       int  // worst round
	errors                 int  // all rounds
	fixed                  []fixedSummary
}

type fixedSummary struct {
	percent        int
	rate           float64
	p50, p99, p999 float64
	sentShare      float64 // sent/planned, median
	errors         int
}

func summarize(ss []sample) summary {
	sum := summary{
		rounds:     len(ss),
		rps:        medianOf(ss, func(s sample) float64 { return s.RPS }),
		p50:        medianOf(ss, func(s sample) float64 { return float64(s.P50) }),
		p99:        medianOf(ss, func(s sample) float64 { return float64(s.P99) }),
		cpu:        medianOf(ss, func(s sample) float64 { return s.CPUPer10k }),
		servingCPU: medianOf(ss, func(s sample) float64 { return s.ServingCPUPer10k }),
		rss:        medianOf(ss, func(s sample) float64 { return float64(s.RSS) }),
		forwarded:  medianOf(ss, func(s sample) float64 { return s.Forwarded }),
		wrkRPS:     medianOf(ss, func(s sample) float64 { return s.WrkRPS }),
	}
	sum.forwardedMeasured = len(ss) > 0
	for _, s := range ss {
		sum.forwardedMeasured = sum.forwardedMeasured && s.ForwardedMeasured
		sum.procs = max(sum.procs, s.Procs)
		if s.Violations > sum.violations || s.Keys > sum.keys && s.Violations == sum.violations {
			sum.violations, sum.keys = s.Violations, s.Keys
		}
		sum.errors += s.Errors
	}
	if len(ss) == 0 {
		return sum
	}
	for i, f := range ss[0].Fixed {
		var col []fixedSample
		for _, s := range ss {
			if i < len(s.Fixed) {
				col = append(col, s.Fixed[i])
			}
		}
		fs := fixedSummary{
			percent:   f.Percent,
			rate:      f.Rate,
			p50:       medianOf(col, func(s fixedSample) float64 { return float64(s.P50) }),
			p99:       medianOf(col, func(s fixedSample) float64 { return float64(s.P99) }),
			p999:      medianOf(col, func(s fixedSample) float64 { return float64(s.P999) }),
			sentShare: medianOf(col, func(s fixedSample) float64 { return float64(s.Sent) / float64(max(s.Planned, 1)) }),
		}
		for _, c := range col {
			fs.errors += c.Errors
		}
		sum.fixed = append(sum.fixed, fs)
	}
	return sum
}

// reportMeta describes the run for the report's header.
type reportMeta struct {
	date     time.Time
	machine  string
	software string
	commit   string
	settings string
}

// render is the markdown report: per workload a throughput table and a
// fixed-rate latency table, medians over the rounds.
func render(meta reportMeta, order []setup, wls []workload, res results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## olio benchmark — %s\n\n", meta.date.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- machine: %s\n- software: %s\n- olio: %s\n- run: %s\n", meta.machine, meta.software, meta.commit, meta.settings)
	for _, wl := range wls {
		base := math.NaN()
		if ss := res["direct"][wl.name]; len(ss) > 0 {
			base = summarize(ss).rps
		}
		fmt.Fprintf(&b, "\n### %s — throughput (closed loop)\n\n", wl.title)
		b.WriteString("| setup | req/s | × direct | p50 | p99 | CPU-s / 10k req: layer | layer + apps | RSS (procs) | forwarded | affinity violations | errors | wrk req/s |\n")
		b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, st := range order {
			ss := res[st.id][wl.name]
			if len(ss) == 0 {
				continue
			}
			s := summarize(ss)
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d / %d keys | %d | %s |\n",
				st.name, fmtRate(s.rps), fmtRatio(s.rps/base), fmtDur(s.p50), fmtDur(s.p99),
				fmtCPU(s.cpu), fmtCPU(s.servingCPU), fmtRSS(s.rss, s.procs), fmtShare(s.forwarded, s.forwardedMeasured, st.id),
				s.violations, s.keys, s.errors, fmtRate(s.wrkRPS))
		}
		renderAgainst(&b, wl, order, res, "haproxy")
		var fixedHdr []fixedSummary
		for _, st := range order {
			if ss := res[st.id][wl.name]; len(ss) > 0 && len(ss[0].Fixed) > 0 {
				fixedHdr = summarize(ss).fixed
				break
			}
		}
		if len(fixedHdr) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n### %s — latency at fixed rates (open loop): p50 / p99 / p99.9\n\n| setup |", wl.title)
		for _, f := range fixedHdr {
			fmt.Fprintf(&b, " %d%% of direct (%s req/s) |", f.percent, fmtRate(f.rate))
		}
		b.WriteString("\n|---|" + strings.Repeat("--:|", len(fixedHdr)) + "\n")
		for _, st := range order {
			ss := res[st.id][wl.name]
			if len(ss) == 0 {
				continue
			}
			fmt.Fprintf(&b, "| %s |", st.name)
			for _, f := range summarize(ss).fixed {
				cell := fmt.Sprintf("%s / %s / %s", fmtDur(f.p50), fmtDur(f.p99), fmtDur(f.p999))
				if f.sentShare < 0.999 {
					cell += fmt.Sprintf(" (sent %.0f%%)", 100*f.sentShare)
				}
				if f.errors > 0 {
					cell += fmt.Sprintf(" (%d errors)", f.errors)
				}
				fmt.Fprintf(&b, " %s |", cell)
			}
			b.WriteString("\n")
		}
	}
	b.WriteString(legend)
	return b.String()
}

// renderAgainst writes, when the run has the setup baseID, each other
// setup's same-run ratios to it under wl: throughput, the layer's CPU and
// the whole serving side's, each the median over the rounds of one round's
// ratio (the setups of a round ran minutes apart at most, under the same
// other load on the machine).
func renderAgainst(b *strings.Builder, wl workload, order []setup, res results, baseID string) {
	base := res[baseID][wl.name]
	i := slices.IndexFunc(order, func(s setup) bool { return s.id == baseID })
	if len(base) == 0 || i < 0 {
		return
	}
	name := order[i].name
	fmt.Fprintf(b, "\n### %s — against %s + apps, same run (median of each round's ratio)\n\n", wl.title, name)
	fmt.Fprintf(b, "| setup | req/s × %[1]s | CPU / req, layer × %[1]s's | CPU / req, layer + apps × %[1]s + apps |\n|---|--:|--:|--:|\n", name)
	for _, st := range order {
		ss := res[st.id][wl.name]
		if len(ss) == 0 {
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", st.name,
			fmtRatio(sameRunRatio(ss, base, func(s sample) float64 { return s.RPS })),
			fmtRatio(sameRunRatio(ss, base, func(s sample) float64 { return s.CPUPer10k })),
			fmtRatio(sameRunRatio(ss, base, func(s sample) float64 { return s.ServingCPUPer10k })))
	}
}

// sameRunRatio is the median over the rounds of f(a round's sample of ss) /
// f(the same round's sample of base), leaving out the rounds where either
// was not measured (not positive); NaN for none.
func sameRunRatio(ss, base []sample, f func(sample) float64) float64 {
	var rs []float64
	for i := 0; i < min(len(ss), len(base)); i++ {
		if v, w := f(ss[i]), f(base[i]); v > 0 && w > 0 {
			rs = append(rs, v/w)
		}
	}
	return median(rs)
}

const legend = `
How to read it: medians over the rounds. req/s comes from the harness's own
closed-loop generator (a lean HTTP/1.1 keep-alive client, the same for every
setup; under "random key", direct keeps one connection per app per client),
p50/p99 at that saturating load. CPU-s / 10k req "layer" and RSS are those
of the layer under test only: olio's master and routers (not its app
children), all of HAProxy's or nginx's processes; direct has none. "layer +
apps" is the whole serving side: the layer and the apps behind it (olio's
app children; the shared apps behind direct, HAProxy, nginx and the
prototypes), which does not depend on how much CPU the load generator takes.
An embedded olio worker is router and app in one process: its "layer"
already includes the handler, and it has no apps apart. The "against" table
is each round's ratio to the baseline's sample of the same round, median
over the rounds. forwarded is the share of requests olio's accepting router
forwards to the owner router, from olio's metrics ("~": the expected
(N-1)/N, where they were not available); a connection handed off whole to
its owner (--handoff) forwards nothing.
affinity violations are keys answered by more than one app index (worst
round). wrk req/s cross-checks the proxied setups with wrk (one key per wrk
thread and one thread per connection for "one key per connection"). Fixed-rate
latency runs from each request's due time, so queueing counts. The load
generator, the layer and the apps all share the machine's cores.
`

func fmtRate(v float64) string {
	if math.IsNaN(v) || v <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f", v)
}

func fmtRatio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return fmt.Sprintf("%.2f", v)
}

// fmtDur formats nanoseconds as milliseconds.
func fmtDur(ns float64) string {
	if math.IsNaN(ns) || ns <= 0 {
		return "—"
	}
	ms := ns / 1e6
	switch {
	case ms < 10:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.2f s", ms/1000)
	}
}

func fmtCPU(v float64) string {
	if math.IsNaN(v) || v < 0 {
		return "—"
	}
	return fmt.Sprintf("%.3f", v)
}

func fmtRSS(bytes float64, procs int) string {
	if math.IsNaN(bytes) || bytes <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f MiB (%d)", bytes/(1<<20), procs)
}

// fmtShare formats the forwarded share; "~" marks the expected value where
// olio's metrics did not tell the measured one.
func fmtShare(v float64, measured bool, setupID string) string {
	switch {
	case setupID == "direct":
		return "0%"
	case math.IsNaN(v) || v < 0:
		return "n/a"
	case measured:
		return fmt.Sprintf("%.1f%%", 100*v)
	}
	return fmt.Sprintf("~%.0f%%", 100*v)
}

// describeMachine names the CPU, the core count, the memory and the kernel.
func describeMachine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %f kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.0f GiB RAM", kb/(1<<20))
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s, nproc %d%s, Linux %s, %s/%s", model, runtime.NumCPU(), mem,
		strings.TrimSpace(string(kernel)), runtime.GOOS, runtime.GOARCH)
}

// loadAvg is the 1-minute load average: other work on the machine skews
// every figure, so the report shows it.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// describeSoftware names the Go, HAProxy, nginx and wrk versions.
func describeSoftware(useWrk bool) string {
	first := func(name string, args ...string) string {
		out, _ := exec.Command(name, args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	parts := []string{runtime.Version()}
	if v := first("haproxy", "-v"); v != "" {
		f := strings.Fields(v)
		parts = append(parts, "HAProxy "+f[min(2, len(f)-1)])
	}
	if v := first("nginx", "-v"); v != "" {
		parts = append(parts, strings.TrimPrefix(v, "nginx version: "))
	}
	if useWrk {
		if f := strings.Fields(first("wrk", "-v")); len(f) > 1 {
			parts = append(parts, "wrk "+f[1])
		}
	}
	return strings.Join(parts, ", ")
}
