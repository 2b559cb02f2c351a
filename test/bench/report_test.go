package main

import (
	"math"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/olio-dev/olio/test/harness"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 1000; i++ {
		d = append(d, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 500}, {99, 990}, {99.9, 999}, {100, 1000}, {0.01, 1}} {
		if g, e := percentile(d, c.p), c.want; g != e {
			t.Errorf("percentile(1..1000, %v) = %v, want %v", c.p, g, e)
		}
	}
	if g := percentile(nil, 99); g != 0 {
		t.Errorf("percentile(nil) = %v, want 0", g)
	}
	if g, e := percentile([]time.Duration{7}, 99.9), time.Duration(7); g != e {
		t.Errorf("percentile([7], 99.9) = %v, want %v", g, e)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{9, 1, 5}, 5}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if g, e := median(c.in), c.want; g != e {
			t.Errorf("median(%v) = %v, want %v", c.in, g, e)
		}
	}
	if g := median(nil); !math.IsNaN(g) {
		t.Errorf("median(nil) = %v, want NaN", g)
	}
	in := []float64{3, 1, 2}
	median(in)
	if in[0] != 3 {
		t.Errorf("median reordered its input: %v", in)
	}
}

func TestParseIndex(t *testing.T) {
	for _, c := range []struct {
		body string
		want int
		ok   bool
	}{
		{`{"index":3,"pid":12}`, 3, true},
		{`{"pid": 12, "index": 17}`, 17, true},
		{`{"pid":12}`, 0, false},
	} {
		if g, ok := parseIndex([]byte(c.body)); g != c.want || ok != c.ok {
			t.Errorf("parseIndex(%s) = %d, %v; want %d, %v", c.body, g, ok, c.want, c.ok)
		}
	}
}

func proc(pid int, ticks uint64) harness.ProcStat {
	return harness.ProcStat{ProcKey: harness.ProcKey{Pid: pid, Start: uint64(pid) * 7}, Ticks: ticks}
}

func pids(ps []harness.ProcStat) []int {
	var out []int
	for _, p := range ps {
		out = append(out, p.Pid)
	}
	return out
}

// olio's tree: the master, its routers, their app children (and what an app
// starts); the layer is down to the routers, the apps are the rest.
func TestSplitTree(t *testing.T) {
	tree := []harness.Node{
		{ProcStat: proc(10, 0), Depth: 0},  // master
		{ProcStat: proc(11, 0), Depth: 1},  // router 0
		{ProcStat: proc(12, 0), Depth: 1},  // router 1
		{ProcStat: proc(21, 0), Depth: 2},  // app 0
		{ProcStat: proc(22, 0), Depth: 2},  // app 1
		{ProcStat: proc(221, 0), Depth: 3}, // app 1's child
	}
	lay, apps := splitTree(tree, 1)
	if g, e := pids(lay), []int{10, 11, 12}; !slices.Equal(g, e) {
		t.Errorf("layer = %v, want %v", g, e)
	}
	if g, e := pids(apps), []int{21, 22, 221}; !slices.Equal(g, e) {
		t.Errorf("apps = %v, want %v", g, e)
	}
	lay, apps = splitTree(tree, -1) // HAProxy, nginx: the whole tree is the layer
	if len(lay) != len(tree) || len(apps) != 0 {
		t.Errorf("maxDepth -1: layer %v, apps %v; want all in the layer", pids(lay), pids(apps))
	}
}

func TestServingCPUSince(t *testing.T) {
	before := servingCPU{
		layer: snapshot([]harness.ProcStat{proc(1, 100), proc(2, 50)}),
		apps:  snapshot([]harness.ProcStat{proc(3, 1000)}),
	}
	after := servingCPU{
		// 1 spent 30 ticks, 2 exited (its ticks are lost, not negative), 4 started: in full
		layer: snapshot([]harness.ProcStat{proc(1, 130), proc(4, 20)}),
		apps:  snapshot([]harness.ProcStat{proc(3, 1250)}),
	}
	lay, apps := after.secondsSince(before)
	if lay != 0.5 || apps != 2.5 {
		t.Errorf("secondsSince = %v s layer, %v s apps; want 0.5, 2.5", lay, apps)
	}
	// a reused pid is another process (another start time): counted in full
	reused := servingCPU{layer: cpuSnapshot{{Pid: 1, Start: 99}: 10}, apps: cpuSnapshot{}}
	if lay, _ := reused.secondsSince(before); lay != 0.1 {
		t.Errorf("reused pid: layer %v s, want 0.1", lay)
	}
}

func TestCPUPer10k(t *testing.T) {
	for _, c := range []struct {
		hasLayer          bool
		layer, apps       float64
		ok                int
		wantLay, wantServ float64
	}{
		{true, 2, 3, 20000, 1, 2.5},   // olio, HAProxy: both
		{true, 2, 0, 20000, 1, 1},     // embedded: no apps apart
		{false, 0, 3, 20000, -1, 1.5}, // direct: the apps alone
		{true, 2, 3, 0, -1, -1},       // nothing answered
	} {
		lay, serv := cpuPer10k(c.hasLayer, c.layer, c.apps, c.ok)
		if lay != c.wantLay || serv != c.wantServ {
			t.Errorf("cpuPer10k(%v, %v, %v, %d) = %v, %v; want %v, %v", c.hasLayer, c.layer, c.apps, c.ok, lay, serv, c.wantLay, c.wantServ)
		}
	}
}

// The real thing: a process tree read from /proc, its root the layer, its
// child an app, and a process apart as a shared app.
func TestLayerSplitProcesses(t *testing.T) {
	// sh forks sleep (it runs a command after it) in its own process group,
	// so that cleanup kills both
	root := exec.Command("sh", "-c", "sleep 60; :")
	root.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := root.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-root.Process.Pid, syscall.SIGKILL)
		root.Wait()
	})
	shared := exec.Command("sleep", "60")
	if err := shared.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		shared.Process.Kill()
		shared.Wait()
	})
	l := layer{root: root.Process.Pid, maxDepth: 0, apps: []int{shared.Process.Pid}}
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		lay, apps := l.split()
		if len(lay) == 1 && lay[0].Pid == root.Process.Pid && len(apps) == 2 && slices.Contains(pids(apps), shared.Process.Pid) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 30 s for layer [sh %d] and apps [its sleep, %d]: layer %v, apps %v",
				root.Process.Pid, shared.Process.Pid, pids(lay), pids(apps))
		}
		<-tick.C
	}
	if g := (layer{apps: []int{shared.Process.Pid}}); len(g.procs()) != 0 {
		t.Errorf("direct's layer = %v, want none", pids(g.procs()))
	}
}

func TestSameRunRatio(t *testing.T) {
	cpu := func(s sample) float64 { return s.ServingCPUPer10k }
	olio := []sample{{ServingCPUPer10k: 2}, {ServingCPUPer10k: 3}, {ServingCPUPer10k: 9}, {ServingCPUPer10k: -1}}
	hap := []sample{{ServingCPUPer10k: 1}, {ServingCPUPer10k: 2}, {ServingCPUPer10k: 3}, {ServingCPUPer10k: 1}}
	// rounds: 2, 1.5, 3 and one not measured
	if g, e := sameRunRatio(olio, hap, cpu), 2.0; g != e {
		t.Errorf("sameRunRatio = %v, want %v", g, e)
	}
	if g := sameRunRatio(olio, nil, cpu); !math.IsNaN(g) {
		t.Errorf("sameRunRatio against nothing = %v, want NaN", g)
	}
}

func TestRenderServingSide(t *testing.T) {
	order := []setup{{id: "direct", name: "direct"}, {id: "olio4", name: "olio --workers 4"}, {id: "haproxy", name: "HAProxy"}}
	wls := []workload{{name: "random", title: "random key"}}
	res := results{}
	res.add("direct", "random", sample{RPS: 4000, CPUPer10k: -1, ServingCPUPer10k: 0.2, Forwarded: 0})
	res.add("olio4", "random", sample{RPS: 1000, CPUPer10k: 0.6, ServingCPUPer10k: 0.8, Forwarded: 0.75})
	res.add("haproxy", "random", sample{RPS: 2000, CPUPer10k: 0.2, ServingCPUPer10k: 0.4, Forwarded: -1})
	out := render(reportMeta{}, order, wls, res)
	for _, want := range []string{
		"| CPU-s / 10k req: layer | layer + apps |",
		"| olio --workers 4 | 1000 | 0.25 | — | — | 0.600 | 0.800 |",
		"| direct | 4000 | 1.00 | — | — | — | 0.200 |",
		"against HAProxy + apps, same run",
		"| olio --workers 4 | 0.50 | 3.00 | 2.00 |",
		"| HAProxy | 1.00 | 1.00 | 1.00 |",
		"| direct | 2.00 | — | 0.50 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	delete(res, "haproxy")
	if out := render(reportMeta{}, order[:2], wls, res); strings.Contains(out, "+ apps, same run") {
		t.Errorf("report without HAProxy has an \"against\" table:\n%s", out)
	}
}
