package process

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxCPUs is how many CPUs a unix.CPUSet holds.
const maxCPUs = 1024

// pinCPU pins this router to one CPU (--cpu-affinity): the (n mod count)-th of the count
// CPUs the process may run on, so worker i lands on CPU i mod NumCPU when olio may use
// every CPU. Every thread of the process is pinned; threads started later and the app,
// started from one of them, inherit the mask. It returns the CPU chosen.
func pinCPU(n int) (int, error) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return -1, fmt.Errorf("router: cpu affinity: %w", err)
	}
	cpu := nthCPU(&allowed, n)
	if cpu < 0 {
		return -1, fmt.Errorf("router: cpu affinity: no CPU allowed")
	}
	var set unix.CPUSet
	set.Set(cpu)
	// A thread being created while we go through the list may start with the old mask:
	// go again until a pass finds nothing to change.
	for pass := 0; pass < 5; pass++ {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return -1, fmt.Errorf("router: cpu affinity: %w", err)
		}
		changed := false
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			var cur unix.CPUSet
			if unix.SchedGetaffinity(tid, &cur) == nil && cur == set {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
				return -1, fmt.Errorf("router: cpu affinity: pin thread %d to CPU %d: %w", tid, cpu, err)
			}
			changed = true
		}
		if !changed {
			break
		}
	}
	return cpu, nil
}

// nthCPU returns the (n mod count)-th CPU in set, or -1 when set is empty.
func nthCPU(set *unix.CPUSet, n int) int {
	count := set.Count()
	if count == 0 || n < 0 {
		return -1
	}
	k := n % count
	for cpu := 0; cpu < maxCPUs; cpu++ {
		if set.IsSet(cpu) {
			if k == 0 {
				return cpu
			}
			k--
		}
	}
	return -1
}

// pin pins the router (and so its app) to cpu mod the CPU count; cpu < 0 means no pinning.
// A failure is logged: a worker runs unpinned rather than not at all.
func (r *Router) pin(cpu int) {
	if cpu < 0 {
		return
	}
	got, err := pinCPU(cpu)
	if err != nil {
		r.logger.Warn("cpu affinity not set; running unpinned", "err", err)
		return
	}
	r.pinned = true
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	r.logger.Info("pinned to cpu", "cpu", got)
}

// procsFor is a router's share of cpus CPUs when workers routers share them: at least
// one, rounded up. Go's default, one P per CPU in every router, costs a busy cluster
// thread wake-ups and work stealing between processes that contend for the same cores
// (router CPU per request at 4 workers on 2 CPUs: 0.87-0.93x with the share).
func procsFor(cpus, workers int) int {
	if workers < 1 {
		workers = 1
	}
	return max(1, (cpus+workers-1)/workers)
}

// startProcs is GOMAXPROCS as Go set it at start: the CPUs this process may use, within a
// container's CPU limit (Go's default follows the cgroup quota, which runtime.NumCPU does
// not, and which setting GOMAXPROCS turns off).
var startProcs = runtime.GOMAXPROCS(0)

// shareCPUs sets GOMAXPROCS to the router's share of the machine for the current worker
// count, unless the operator set GOMAXPROCS (their choice stands) or the router is pinned
// to one CPU (then it is 1).
func (r *Router) shareCPUs(workers int) {
	if !r.fitProcs || r.pinned || os.Getenv("GOMAXPROCS") != "" {
		return
	}
	if n := procsFor(startProcs, workers); runtime.GOMAXPROCS(0) != n {
		runtime.GOMAXPROCS(n)
	}
}
