package main

import (
	"bytes"
	"context"
	"fmt"
	"math/bits"
	"net/http"
	"os"
	"time"

	"github.com/olio-dev/olio/test/harness"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100
// on every Linux architecture the harness runs on.
const clockTicks = 100

// layer is the serving side of a setup, split in two: the layer under test
// (root and its descendants down to maxDepth; negative: all), and the apps it
// serves (root's descendants below maxDepth, as olio's app children, and the
// shared apps, each with its descendants, which direct, HAProxy, nginx and
// the prototypes run in front of). The report charges the layer's CPU to the
// setup, and compares the whole serving side (layer + apps), which does not
// depend on how much CPU the load generator takes from it.
type layer struct {
	root     int // 0: none (direct: the apps alone)
	maxDepth int
	apps     []int // the shared apps' pids
}

// split sorts the processes of the serving side into the layer and its apps.
func (l layer) split() (lay, apps []harness.ProcStat) {
	if l.root > 0 {
		lay, apps = splitTree(harness.Tree(l.root), l.maxDepth)
	}
	for _, pid := range l.apps {
		for _, n := range harness.Tree(pid) {
			apps = append(apps, n.ProcStat)
		}
	}
	return lay, apps
}

// splitTree sorts a process tree (root at depth 0) into the layer, the nodes
// down to maxDepth (negative: all), and the apps, the nodes below it.
func splitTree(nodes []harness.Node, maxDepth int) (lay, apps []harness.ProcStat) {
	for _, n := range nodes {
		if maxDepth < 0 || n.Depth <= maxDepth {
			lay = append(lay, n.ProcStat)
		} else {
			apps = append(apps, n.ProcStat)
		}
	}
	return lay, apps
}

func (l layer) procs() []harness.ProcStat {
	lay, _ := l.split()
	return lay
}

// cpuSnapshot maps each process to its CPU ticks so far.
type cpuSnapshot map[harness.ProcKey]uint64

func snapshot(ps []harness.ProcStat) cpuSnapshot {
	s := cpuSnapshot{}
	for _, p := range ps {
		s[p.ProcKey] = p.Ticks
	}
	return s
}

// servingCPU is the CPU ticks so far of the layer's processes and of its
// apps', apart.
type servingCPU struct{ layer, apps cpuSnapshot }

func (l layer) cpu() servingCPU {
	lay, apps := l.split()
	return servingCPU{layer: snapshot(lay), apps: snapshot(apps)}
}

// secondsSince is the CPU time the layer and the apps spent from before to
// s, in seconds.
func (s servingCPU) secondsSince(before servingCPU) (layer, apps float64) {
	return s.layer.secondsSince(before.layer), s.apps.secondsSince(before.apps)
}

// secondsSince is the CPU time spent from before to s, in seconds; a process
// that started in between counts in full.
func (s cpuSnapshot) secondsSince(before cpuSnapshot) float64 {
	var t uint64
	for k, v := range s {
		if b := before[k]; v >= b {
			t += v - b
		}
	}
	return float64(t) / clockTicks
}

// cpuPer10k is the CPU-s per 10k requests, over ok requests, of the layer (-1
// without one) and of the whole serving side, the layer and its apps.
func cpuPer10k(hasLayer bool, layer, apps float64, ok int) (lay, serving float64) {
	if ok <= 0 {
		return -1, -1
	}
	per := 10000 / float64(ok)
	lay = -1
	if hasLayer {
		lay = layer * per
	}
	return lay, (layer + apps) * per
}

// rss is the sum of the resident set sizes of the layer's processes, in bytes
// (pages shared between them, as nginx's master and workers share, count once
// per process).
func (l layer) rss() uint64 {
	var t uint64
	for _, p := range l.procs() {
		t += p.RSS
	}
	return t * uint64(os.Getpagesize())
}

// count is the number of processes in the layer.
func (l layer) count() int { return len(l.procs()) }

// affinity records which app index answered each key. A key answered by
// more than one index is an affinity violation.
type affinity struct {
	seen map[string]uint64 // key → bit set of indexes (indexes 0..63)
	max  int               // distinct keys kept, bounding memory
}

func newAffinity(max int) *affinity {
	return &affinity{seen: make(map[string]uint64), max: max}
}

func (a *affinity) add(key string, index int) {
	if index < 0 || index > 63 {
		return
	}
	bits, ok := a.seen[key]
	if !ok && len(a.seen) >= a.max {
		return
	}
	a.seen[key] = bits | 1<<uint(index)
}

func (a *affinity) merge(b *affinity) {
	for k, v := range b.seen {
		a.seen[k] |= v
	}
}

// violations is the number of keys seen at more than one index, out of all
// keys seen.
func (a *affinity) violations() (bad, keys int) {
	for _, v := range a.seen {
		if bits.OnesCount64(v) > 1 {
			bad++
		}
	}
	return bad, len(a.seen)
}

var indexField = []byte(`"index":`)

// parseIndex finds the demo app's "index" field in its JSON answer without
// decoding the whole body (the load generator shares the CPUs it measures).
func parseIndex(body []byte) (int, bool) {
	i := bytes.Index(body, indexField)
	if i < 0 {
		return 0, false
	}
	b := body[i+len(indexField):]
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	n, ok := 0, false
	for len(b) > 0 && b[0] >= '0' && b[0] <= '9' {
		n, ok = n*10+int(b[0]-'0'), true
		b = b[1:]
	}
	return n, ok
}

// series is one sample of a Prometheus metric.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads the Prometheus text exposition at http://addr/metrics.
func scrape(ctx context.Context, addr string) ([]series, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics on %s: %w %d", addr, errStatus, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("metrics on %s: %w", addr, err)
	}
	var out []series
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			s := series{name: name, labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.value = m.GetCounter().GetValue()
			case m.Untyped != nil:
				s.value = m.GetUntyped().GetValue()
			default:
				continue
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// sumWhere adds up the series that match.
func sumWhere(ss []series, match func(series) bool) (sum float64, found bool) {
	for _, s := range ss {
		if match(s) {
			sum += s.value
			found = true
		}
	}
	return sum, found
}

// olioForwarded is the share of the requests served between two scrapes of
// olio's metrics that an accepting router forwarded to another worker
// (summed over the workers). ok is false when olio does not export them.
func olioForwarded(before, after []series) (share float64, ok bool) {
	fwd := func(s series) bool { return s.name == "olio_requests_forwarded_out_total" }
	served := func(s series) bool { return s.name == "olio_requests_served_total" }
	f0, ok1 := sumWhere(before, fwd)
	f1, ok2 := sumWhere(after, fwd)
	s0, ok3 := sumWhere(before, served)
	s1, ok4 := sumWhere(after, served)
	if !ok1 || !ok2 || !ok3 || !ok4 || s1 <= s0 {
		return 0, false
	}
	return (f1 - f0) / (s1 - s0), true
}
