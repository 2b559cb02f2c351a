package main

import (
	"math"
	"testing"
	"time"
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
