package router

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
