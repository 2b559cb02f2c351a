package listener

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/olio-dev/olio/descend"
)

// The collector is consistent with its descriptions (the pedantic registry checks every
// metric against Describe) and names every series olio_….
func TestCollectorPedantic(t *testing.T) {
	m := bareMaster()
	m.view.Store(&view{epoch: 7})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(collector{m})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "olio_") {
			t.Errorf("series %s is not named olio_…", mf.GetName())
		}
		got[mf.GetName()] = mf.Metric[0].GetGauge().GetValue()
	}
	if got["olio_membership_epoch"] != 7 || got["olio_workers"] != 0 {
		t.Errorf("cluster series %v, want epoch 7 and 0 workers", got)
	}
}

func TestConstHistogram(t *testing.T) {
	h := descend.Histogram{Bounds: []float64{0.1, 1}, Counts: []uint64{2, 5}, Count: 6, Sum: 3.5}
	met, err := constHistogram(descDuration, h, "3")
	if err != nil {
		t.Fatal(err)
	}
	var d dto.Metric
	if err := met.Write(&d); err != nil {
		t.Fatal(err)
	}
	hh := d.GetHistogram()
	if hh.GetSampleCount() != 6 || hh.GetSampleSum() != 3.5 || len(hh.Bucket) != 2 ||
		hh.Bucket[0].GetUpperBound() != 0.1 || hh.Bucket[0].GetCumulativeCount() != 2 || hh.Bucket[1].GetCumulativeCount() != 5 {
		t.Errorf("histogram %v", hh)
	}
	if l := d.GetLabel(); len(l) != 1 || l[0].GetName() != "worker" || l[0].GetValue() != "3" {
		t.Errorf("labels %v, want worker=3", l)
	}
	if _, err := constHistogram(descDuration, descend.Histogram{Bounds: []float64{1}}, "0"); err == nil {
		t.Error("a histogram with bounds but no counts was accepted")
	}
}
