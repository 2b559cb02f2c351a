package main

import (
	"slices"
	"testing"
	"time"

	"github.com/olio-dev/olio/listener"
)

func TestLogValue(t *testing.T) {
	line := `time=2026-11-23T18:55:29.913Z level=INFO msg="all workers ready" workers=2 listen=127.0.0.1:18411 startup=34ms`
	for _, c := range []struct {
		key, want string
		ok        bool
	}{
		{"time", "2026-11-23T18:55:29.913Z", true},
		{"msg", "all workers ready", true},
		{"workers", "2", true},
		{"startup", "34ms", true},
		{"start", "", false}, // a prefix of a key is not the key
		{"ready", "", false}, // inside a quoted value
	} {
		if g, ok := logValue(line, c.key); g != c.want || ok != c.ok {
			t.Errorf("logValue(%s) = %q, %v; want %q, %v", c.key, g, ok, c.want, c.ok)
		}
	}
	app := `time=2026-11-23T18:55:29.891Z level=INFO msg="msg=\"demo app listening\" addr=x" worker=1`
	if g, e := mustValue(t, app, "msg"), `msg="demo app listening" addr=x`; g != e {
		t.Errorf("quoted msg = %q, want %q", g, e)
	}
	if g, e := mustValue(t, app, "worker"), "1"; g != e {
		t.Errorf("worker after a quoted value with key=value inside = %q, want %q", g, e)
	}
	tm, ok := logTime(line)
	if want := time.Date(2026, 11, 23, 18, 55, 29, 913e6, time.UTC); !ok || !tm.Equal(want) {
		t.Errorf("logTime = %v, %v; want %v", tm, ok, want)
	}
}

func mustValue(t *testing.T, line, key string) string {
	t.Helper()
	v, ok := logValue(line, key)
	if !ok {
		t.Fatalf("logValue(%q, %s): not found", line, key)
	}
	return v
}

func TestLogWatchSplit(t *testing.T) {
	var w logWatch
	if g := w.split([]byte("a\nb")); !slices.Equal(g, []string{"a"}) {
		t.Errorf("first = %q, want [a]", g)
	}
	if g := w.split([]byte("c")); g != nil {
		t.Errorf("no newline = %q, want none", g)
	}
	if g := w.split([]byte("\n\nd\n")); !slices.Equal(g, []string{"bc", "", "d"}) {
		t.Errorf("rest = %q, want [bc  d]", g)
	}
	if len(w.partial) != 0 {
		t.Errorf("partial = %q after a final newline", w.partial)
	}
}

func TestClassify(t *testing.T) {
	ms := time.Millisecond
	recs := []reqRecord{
		{at: 0, lat: ms},                        // before the window
		{at: 10 * ms, lat: 2 * ms},              // before
		{at: 18 * ms, lat: 5 * ms},              // in flight at the HUP: during, answered in it
		{at: 25 * ms, lat: 1 * ms},              // during
		{at: 29 * ms, lat: 4 * ms},              // sent during, answered after: during, not served
		{at: 31 * ms, lat: 1 * ms},              // after
		{at: 26 * ms, lat: ms, err: errStatus},  // failed
		{at: 2 * ms, lat: ms, err: errProtocol}, // failed, before the window
	}
	p := classify(recs, 5*ms, 20*ms, 30*ms)
	if g, e := p.before, []time.Duration{2 * ms}; !slices.Equal(g, e) {
		t.Errorf("before = %v, want %v", g, e)
	}
	if g, e := p.during, []time.Duration{1 * ms, 4 * ms, 5 * ms}; !slices.Equal(g, e) {
		t.Errorf("during = %v, want %v", g, e)
	}
	if g, e := p.served, 2; g != e {
		t.Errorf("served = %d, want %d", g, e)
	}
	if g, e := p.errs, 2; g != e || p.lastErr != errProtocol.Error() {
		t.Errorf("errs = %d (last %q), want %d (last %q)", g, p.lastErr, e, errProtocol)
	}
}

func TestComparePids(t *testing.T) {
	before := &listener.Status{Workers: []listener.WorkerStatus{{Index: 0, RouterPID: 10, AppPID: 11}, {Index: 1, RouterPID: 20, AppPID: 21}, {Index: 2, RouterPID: 30, AppPID: 31}}}
	after := &listener.Status{Workers: []listener.WorkerStatus{{Index: 0, RouterPID: 10, AppPID: 12}, {Index: 1, RouterPID: 22, AppPID: 21}, {Index: 2, RouterPID: 30, AppPID: 0}}}
	if n, r := comparePids(before, after); n != 1 || r != 2 {
		t.Errorf("comparePids = %d new apps, %d routers kept; want 1, 2", n, r)
	}
}

func TestScenarioFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-scenario", "rolling"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.workers != 8 || cfg.conns != 16 || cfg.duration != 5*time.Second || cfg.out != "test/bench/results/rolling.md" {
		t.Errorf("rolling defaults: workers %d, c %d, d %v, out %s", cfg.workers, cfg.conns, cfg.duration, cfg.out)
	}
	cfg, err = parseFlags([]string{"-scenario", "rolling", "-workers", "3", "-quick"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.workers != 3 || cfg.rounds != 1 || cfg.duration != 3*time.Second {
		t.Errorf("rolling -workers 3 -quick: workers %d, rounds %d, d %v", cfg.workers, cfg.rounds, cfg.duration)
	}
	cfg, err = parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.scenario != "compare" || cfg.workers != 4 || cfg.conns != 64 || cfg.out != "test/bench/results/latest.md" {
		t.Errorf("compare defaults changed: %+v", cfg)
	}
	if cfg, err = parseFlags([]string{"-scenario", "startup", "-sizes", "2,64"}); err != nil || !slices.Equal(cfg.sizes, []int{2, 64}) {
		t.Errorf("-sizes 2,64: %v, %v", cfg, err)
	}
	for _, bad := range [][]string{{"-scenario", "nope"}, {"-scenario", "startup", "-sizes", "0"}, {"-scenario", "startup", "-sizes", ""}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) accepted it", bad)
		}
	}
}
