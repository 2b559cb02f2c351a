package process

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestNthCPU(t *testing.T) {
	var set unix.CPUSet
	if g := nthCPU(&set, 0); g != -1 {
		t.Errorf("empty set: nthCPU = %d, want -1", g)
	}
	for _, c := range []int{2, 3, 5, 700} {
		set.Set(c)
	}
	for _, c := range []struct{ n, want int }{
		{0, 2}, {1, 3}, {2, 5}, {3, 700}, {4, 2}, {7, 700}, {9, 3}, {-1, -1},
	} {
		if g := nthCPU(&set, c.n); g != c.want {
			t.Errorf("nthCPU(%d) = %d, want %d", c.n, g, c.want)
		}
	}
}

func TestProcsFor(t *testing.T) {
	for _, c := range []struct{ cpus, workers, want int }{
		{2, 4, 1}, {2, 2, 1}, {2, 1, 2}, {8, 3, 3}, {8, 8, 1}, {8, 64, 1}, {16, 4, 4}, {4, 0, 4}, {1, 1, 1},
	} {
		if g := procsFor(c.cpus, c.workers); g != c.want {
			t.Errorf("procsFor(%d cpus, %d workers) = %d, want %d", c.cpus, c.workers, g, c.want)
		}
	}
}
