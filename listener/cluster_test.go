package listener

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeConfig is a configuration of n workers running app (app-v1 or app-v2: executables in
// a temporary directory that fake routers never run), for a master with fake routers.
func fakeConfig(t *testing.T, n int, app string) Config {
	path := filepath.Join(t.TempDir(), app)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Workers, cfg.App = n, []string{path}
	cfg.ShutdownTimeout = 5 * time.Second
	return cfg
}

// checkTable fails the test unless the published table has members members (and as many
// workers) at epoch, and the routers running are exactly the table's, one per worker.
func checkTable(t *testing.T, m *Master, f *fakeRouters, members int, epoch uint64) {
	t.Helper()
	want := make([]int, members)
	for i := range want {
		want[i] = i
	}
	if got := f.runningIndexes(); !slices.Equal(got, want) {
		t.Errorf("routers running: %q; want one for each of the %d workers in the table", f.running(), members)
	}
	v := m.snapshot()
	if v.members != members || len(v.workers) != members || v.epoch != epoch {
		t.Errorf("table: %d members, %d workers, epoch %d; want %d, %d, %d", v.members, len(v.workers), v.epoch, members, members, epoch)
	}
	if st := m.Status(testContext(t)); st.Members != members || st.Epoch != epoch || st.Ready != members {
		t.Errorf("status: %d members (%d ready), epoch %d; want %d (all ready), epoch %d", st.Members, st.Ready, st.Epoch, members, epoch)
	}
}

// matching is the events that begin with prefix, in order.
func matching(events []string, prefix string) []string {
	return slices.DeleteFunc(slices.Clone(events), func(e string) bool { return !strings.HasPrefix(e, prefix) })
}

// Scaling up starts the new workers and tells every router the new count at the next
// epoch; scaling down tells every router first, then drains and stops the surplus.
func TestScaleChangesTableAndEpoch(t *testing.T) {
	f := newFakeRouters()
	m, _ := fakeMaster(t, fakeConfig(t, 2, "app-v1"), f, Options{})
	checkTable(t, m, f, 2, 1)

	if err := m.Scale(testContext(t), 4); err != nil {
		t.Fatal(err)
	}
	checkTable(t, m, f, 4, 2)
	ev := f.take()
	slices.Sort(ev)
	want := []string{"membership 0: epoch 2, 4 workers", "membership 1: epoch 2, 4 workers",
		"membership 2: epoch 2, 4 workers", "membership 3: epoch 2, 4 workers"}
	if g := matching(ev, "membership"); !slices.Equal(g, want) {
		t.Errorf("growing to 4, the routers heard %q, want %q", g, want)
	}

	if err := m.Resize(testContext(t), -3); err != nil {
		t.Fatal(err)
	}
	checkTable(t, m, f, 1, 3)
	ev = f.take()
	if g := matching(ev, "membership"); len(g) != 4 || !strings.HasSuffix(g[0], "epoch 3, 1 workers") {
		t.Errorf("shrinking to 1, the routers heard %q, want all 4 to hear epoch 3, 1 worker", g)
	}
	drains := matching(ev, "drain")
	slices.Sort(drains)
	if want := []string{"drain 1", "drain 2", "drain 3"}; !slices.Equal(drains, want) {
		t.Errorf("shrinking to 1 drained %q, want %q", drains, want)
	}
	if last := slices.IndexFunc(ev, func(e string) bool { return strings.HasPrefix(e, "membership") }); last > slices.Index(ev, drains[0]) {
		t.Errorf("a worker was drained before every router heard the new count: %q", ev)
	}

	if err := m.Scale(testContext(t), MaxWorkers+1); !errors.Is(err, ErrConfig) {
		t.Errorf("Scale(MaxWorkers+1) = %v, want ErrConfig", err)
	}
	checkTable(t, m, f, 1, 3)
}

// A scale up whose new worker's app does not become ready stops the new workers and
// leaves the table as it was.
func TestScaleUpFailsBack(t *testing.T) {
	f := newFakeRouters()
	f.appFails = func(index int) bool { return index == 3 }
	m, _ := fakeMaster(t, fakeConfig(t, 2, "app-v1"), f, Options{})
	err := m.Scale(testContext(t), 4)
	if err == nil || !strings.Contains(err.Error(), "worker 3") {
		t.Fatalf("Scale(4) = %v, want an error naming worker 3", err)
	}
	checkTable(t, m, f, 2, 1)
	ev := f.take()
	if g := matching(ev, "membership"); len(g) != 0 {
		t.Errorf("the routers heard of a scale that failed: %q", g)
	}
	drains := matching(ev, "drain")
	slices.Sort(drains)
	if want := []string{"drain 2", "drain 3"}; !slices.Equal(drains, want) {
		t.Errorf("the failed scale drained %q, want the new workers %q", drains, want)
	}
}

// A reload replaces each worker's app in index order, one after the other.
func TestReloadReplacesEachWorkerInOrder(t *testing.T) {
	f := newFakeRouters()
	m, _ := fakeMaster(t, fakeConfig(t, 3, "app-v1"), f, Options{Reload: func() (Config, error) { return fakeConfig(t, 3, "app-v2"), nil }})
	if err := m.Reload(testContext(t)); err != nil {
		t.Fatal(err)
	}
	want := []string{"restart 0 onto app-v2", "restart 1 onto app-v2", "restart 2 onto app-v2"}
	if g := matching(f.take(), "restart"); !slices.Equal(g, want) {
		t.Errorf("the reload restarted %q, want %q", g, want)
	}
	if app := m.config().App; len(app) != 1 || filepath.Base(app[0]) != "app-v2" {
		t.Errorf("after the reload the app is %q, want app-v2", app)
	}
	checkTable(t, m, f, 3, 1)
}

// A reload whose new app fails on a worker goes back to the previous configuration: the
// worker count it changed is restored, and the workers already restarted onto the new app
// are restarted onto the old one.
func TestReloadRollsBackWhenANewAppFails(t *testing.T) {
	f := newFakeRouters()
	f.restartErr = func(index int, app string) string {
		if index == 1 && app == "app-v2" {
			return "app did not become ready"
		}
		return ""
	}
	m, _ := fakeMaster(t, fakeConfig(t, 2, "app-v1"), f, Options{Reload: func() (Config, error) { return fakeConfig(t, 3, "app-v2"), nil }})
	err := m.Reload(testContext(t))
	if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "app did not become ready") {
		t.Fatalf("Reload = %v, want ErrRolledBack saying why", err)
	}
	ev := f.take()
	want := []string{"restart 0 onto app-v2", "restart 1 onto app-v2", "restart 0 onto app-v1"}
	if g := matching(ev, "restart"); !slices.Equal(g, want) {
		t.Errorf("the reload restarted %q, want %q", g, want)
	}
	if g := matching(ev, "drain"); !slices.Equal(g, []string{"drain 2"}) {
		t.Errorf("going back to 2 workers drained %q, want worker 2", g)
	}
	if app := m.config().App; len(app) != 1 || filepath.Base(app[0]) != "app-v1" {
		t.Errorf("after the rollback the app is %q, want app-v1", app)
	}
	checkTable(t, m, f, 2, 3) // grown to 3 (epoch 2), back to 2 (epoch 3)
}

// An operation that arrives while another runs waits its turn, then runs.
func TestOperationWaitsItsTurn(t *testing.T) {
	f := newFakeRouters()
	f.hold = make(chan struct{})
	m, _ := fakeMaster(t, fakeConfig(t, 2, "app-v1"), f, Options{})
	reloaded, scaled := make(chan error, 1), make(chan error, 1)
	go func() { reloaded <- m.Reload(context.Background()) }()
	f.waitFor(t, "restart", func(e string) bool { return strings.HasPrefix(e, "restart 0") })
	go func() { scaled <- m.Scale(context.Background(), 3) }()
	waitQueued(t, m, 1)
	if v := m.snapshot(); v.members != 2 || v.epoch != 1 {
		t.Fatalf("the scale ran during the reload: %d members at epoch %d", v.members, v.epoch)
	}
	close(f.hold)
	if err := recvErr(t, "Reload", reloaded); err != nil {
		t.Errorf("Reload: %v", err)
	}
	if err := recvErr(t, "Scale", scaled); err != nil {
		t.Errorf("Scale: %v", err)
	}
	ev := f.take()
	firstMembership := slices.IndexFunc(ev, func(e string) bool { return strings.HasPrefix(e, "membership") })
	if lastRestart := slices.Index(ev, "restart 1 onto app-v1"); lastRestart < 0 || firstMembership < lastRestart {
		t.Errorf("want the reload's restarts, then the scale's memberships: %q", ev)
	}
	checkTable(t, m, f, 3, 2)
}

// Resizes that wait their turn each apply to the count they find: three TTINs that reach
// the master during a reload add three workers.
func TestQueuedResizesAllApply(t *testing.T) {
	f := newFakeRouters()
	f.hold = make(chan struct{})
	m, _ := fakeMaster(t, fakeConfig(t, 2, "app-v1"), f, Options{})
	reloaded := make(chan error, 1)
	go func() { reloaded <- m.Reload(context.Background()) }()
	f.waitFor(t, "restart", func(e string) bool { return strings.HasPrefix(e, "restart 0") })
	resized := make(chan error, 3)
	for range 3 {
		go func() { resized <- m.Resize(context.Background(), +1) }()
	}
	waitQueued(t, m, 3)
	close(f.hold)
	if err := recvErr(t, "Reload", reloaded); err != nil {
		t.Errorf("Reload: %v", err)
	}
	for range 3 {
		if err := recvErr(t, "Resize(+1)", resized); err != nil {
			t.Errorf("Resize(+1): %v", err)
		}
	}
	checkTable(t, m, f, 5, 4)
}

// A stop ends the operation in progress and refuses the one waiting its turn.
func TestStopRefusesWaitingOperations(t *testing.T) {
	f := newFakeRouters()
	f.hold = make(chan struct{})
	cfg := fakeConfig(t, 2, "app-v1")
	m, _ := fakeMaster(t, cfg, f, Options{})
	reloaded, scaled := make(chan error, 1), make(chan error, 1)
	go func() { reloaded <- m.Reload(context.Background()) }()
	f.waitFor(t, "restart", func(e string) bool { return strings.HasPrefix(e, "restart 0") })
	go func() { scaled <- m.Scale(context.Background(), 3) }()
	waitQueued(t, m, 1)
	m.endLife() // what Run does first when a stop begins
	if err := recvErr(t, "Scale", scaled); !errors.Is(err, ErrStopped) {
		t.Errorf("a scale waiting its turn when the stop began: %v, want ErrStopped", err)
	}
	if err := recvErr(t, "Reload", reloaded); err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("the reload in progress when the stop began: %v, want it cut short", err)
	}
	close(f.hold)
	if err := m.Scale(testContext(t), 1); !errors.Is(err, ErrStopped) {
		t.Errorf("a scale after the stop began: %v, want ErrStopped", err)
	}
}

// A hot upgrade hands the service to a new master once it says it is ready; this master
// then drains its routers, tells the new one, and Run returns. It takes no more operations.
func TestUpgradeHandsOver(t *testing.T) {
	f := newFakeRouters()
	m, ran := fakeMaster(t, fakeConfig(t, 2, "app-v1"), f, Options{Args: []string{"serve", "--workers", "2"}})
	if err := m.Upgrade(testContext(t)); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, "end of Run after the upgrade", ran)
	want := []string{"new master: 2 workers, 2 configured", "drain 0", "drain 1", "new master: the old one has drained"}
	// The new master hears the word on its own goroutine, which may note it after Run returns.
	f.waitFor(t, "the new master hearing the old one has drained", func(e string) bool { return e == want[3] })
	ev := f.take()
	if got := slices.DeleteFunc(ev, func(e string) bool { return !slices.Contains(want, e) }); len(got) != 4 ||
		got[0] != want[0] || got[3] != want[3] {
		t.Errorf("events %q, want %q in that order (drains in any)", got, want)
	}
	if err := m.Scale(testContext(t), 3); !errors.Is(err, ErrStopped) {
		t.Errorf("a scale after the upgrade: %v, want ErrStopped", err)
	}
}

// A hot upgrade whose new master exits before it is ready fails, and this master serves on
// and takes operations as before.
func TestUpgradeFailsBack(t *testing.T) {
	f := newFakeRouters()
	f.newMasterFails = true
	m, ran := fakeMaster(t, fakeConfig(t, 2, "app-v1"), f, Options{Args: []string{"serve"}})
	err := m.Upgrade(testContext(t))
	if !errors.Is(err, ErrUpgrade) || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("Upgrade = %v, want ErrUpgrade saying the new master exited", err)
	}
	if err := m.Scale(testContext(t), 3); err != nil {
		t.Errorf("a scale after a failed upgrade: %v", err)
	}
	checkTable(t, m, f, 3, 2)
	select {
	case <-ran:
		t.Error("Run returned after a failed upgrade")
	default:
	}
}

// waitQueued waits until n operations wait their turn.
func waitQueued(t *testing.T, m *Master, n int32) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d operations waiting their turn", n), func() bool { return m.queued.Load() == n })
}

// A reload that changes the worker count is remembered: scaled after it, a reload whose
// configuration leaves the count where the previous reload put it keeps the scaled count.
func TestReloadRemembersConfiguredCount(t *testing.T) {
	f := newFakeRouters()
	next := fakeConfig(t, 3, "app-v1")
	m, _ := fakeMaster(t, fakeConfig(t, 2, "app-v1"), f, Options{Reload: func() (Config, error) { return next, nil }})
	if err := m.Reload(testContext(t)); err != nil {
		t.Fatal(err)
	}
	checkTable(t, m, f, 3, 2)
	if err := m.Scale(testContext(t), 5); err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(testContext(t)); err != nil {
		t.Fatal(err)
	}
	checkTable(t, m, f, 5, 3) // the configuration still asks for 3: the scale to 5 stays
}

// A hot upgrade hands the new master the running count and the count the configuration
// last asked for, not the configured one alone.
func TestUpgradeHandsOverRunningCount(t *testing.T) {
	f := newFakeRouters()
	m, ran := fakeMaster(t, fakeConfig(t, 2, "app-v1"), f, Options{Args: []string{"serve"}})
	if err := m.Scale(testContext(t), 3); err != nil {
		t.Fatal(err)
	}
	if err := m.Upgrade(testContext(t)); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, "end of Run after the upgrade", ran)
	f.waitFor(t, "the new master's state", func(e string) bool { return strings.HasPrefix(e, "new master: ") })
	if g := matching(f.take(), "new master: "); len(g) == 0 || g[0] != "new master: 3 workers, 2 configured" {
		t.Errorf("the new master heard %q, want 3 workers running, 2 configured", g)
	}
}

// A master started by a hot upgrade runs the count it inherits, and its first reload
// compares the configuration with the count the old master's configuration asked for: a
// configuration that still asks for 2 keeps the 3 that run, and then 5 after a scale.
func TestInheritedCountSurvivesReload(t *testing.T) {
	f := newFakeRouters()
	cfg := fakeConfig(t, 2, "app-v1")
	m, _ := fakeMaster(t, cfg, f, Options{Running: &Handover{Workers: 3, Configured: 2},
		Reload: func() (Config, error) { return cfg, nil }})
	checkTable(t, m, f, 3, 1)
	if err := m.Reload(testContext(t)); err != nil {
		t.Fatal(err)
	}
	checkTable(t, m, f, 3, 1)
	if err := m.Scale(testContext(t), 5); err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(testContext(t)); err != nil {
		t.Fatal(err)
	}
	checkTable(t, m, f, 5, 2)
}

// A master started by a hot upgrade of a cluster scaled to zero starts with zero workers
// (its socket answered by the standby) and says it is ready; it grows when asked.
func TestInheritedZeroWorkers(t *testing.T) {
	f := newFakeRouters()
	ready := make(chan struct{})
	var once sync.Once
	m, _ := fakeMaster(t, fakeConfig(t, 2, "app-v1"), f, Options{Running: &Handover{Workers: 0, Configured: 2},
		Notify: func(state string) {
			if strings.HasPrefix(state, "READY=1") {
				once.Do(func() { close(ready) })
			}
		}})
	waitClosed(t, "READY=1 with zero workers", ready)
	checkTable(t, m, f, 0, 1)
	if err := m.Scale(testContext(t), 1); err != nil {
		t.Fatal(err)
	}
	checkTable(t, m, f, 1, 2)
}

// The count the old master's configuration last asked for is what a reload compares with,
// not the new master's first reading of the file: a file changed from 4 to 2 before the
// upgrade, and not reloaded, applies 2 at the next reload.
func TestInheritedConfiguredCount(t *testing.T) {
	f := newFakeRouters()
	cfg := fakeConfig(t, 2, "app-v1")
	m, _ := fakeMaster(t, cfg, f, Options{Running: &Handover{Workers: 3, Configured: 4},
		Reload: func() (Config, error) { return cfg, nil }})
	checkTable(t, m, f, 3, 1)
	if err := m.Reload(testContext(t)); err != nil {
		t.Fatal(err)
	}
	checkTable(t, m, f, 2, 2)
}

// olio scale +N and -N: the step applies to the count the master holds, over the control
// socket as step=±N; workers= with a sign, a step without one, or both are refused.
func TestScaleByStep(t *testing.T) {
	f := newFakeRouters()
	m, _ := fakeMaster(t, fakeConfig(t, 2, "app-v1"), f, Options{})
	path := filepath.Join(t.TempDir(), "ctl.sock")
	s, err := m.listenControl(path, func() {})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	cl := NewClient(path)
	if n, err := cl.ScaleBy(testContext(t), +1); err != nil || n != 3 {
		t.Fatalf("ScaleBy(+1) at 2 workers = %d, %v; want 3", n, err)
	}
	checkTable(t, m, f, 3, 2)
	var steps []string
	n, _, err := cl.ScaleByProgress(testContext(t), -2, func(p Progress) { steps = append(steps, p.Step) })
	if err != nil || n != 1 {
		t.Fatalf("ScaleByProgress(-2) at 3 workers = %d, %v; want 1", n, err)
	}
	if !slices.Equal(steps, []string{StepStop, StepStop}) {
		t.Errorf("ScaleByProgress(-2) reported steps %q, want two stops", steps)
	}
	checkTable(t, m, f, 1, 3)
	var ce *ControlError
	if _, err := cl.ScaleBy(testContext(t), -2); !errors.As(err, &ce) || ce.Code != 400 || !strings.Contains(err.Error(), "the cluster has 1,") {
		t.Errorf("ScaleBy(-2) at 1 worker = %v; want a 400 saying how many run", err)
	}
	checkTable(t, m, f, 1, 3)
	for _, c := range []struct{ query, says string }{
		{"workers=%2B1", "has a sign"}, // "+1": once read as 1
		{"workers=+1", "has a sign"},   // an unescaped + is a space
		{"workers=-1", "has a sign"},
		{"workers=", "give workers=N"},
		{"step=1", "not a signed whole number"},
		{"step=%2B", "not a signed whole number"},
		{"step=+1", "%2B"},
		{"step=%2B1&workers=2", "not both"},
		{"step=%2B2000", "between 0 and"},
	} {
		resp, err := cl.send(testContext(t), "POST", controlScale+"?"+c.query)
		if err != nil {
			t.Fatalf("POST /scale?%s: %v", c.query, err)
		}
		err = cl.decode(resp, "POST", controlScale, nil)
		resp.Body.Close()
		if !errors.As(err, &ce) || ce.Code != 400 || !strings.Contains(err.Error(), c.says) {
			t.Errorf("POST /scale?%s = %v; want a 400 saying %q", c.query, err, c.says)
		}
	}
	checkTable(t, m, f, 1, 3)
}
