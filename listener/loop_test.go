package listener

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/olio-dev/olio/descend"
	"github.com/olio-dev/olio/router/process"
)

// heldMaster is a hot upgrade's new master under --handover exclusive, with fake routers:
// its routers hold their keys until the old master says, on the returned pipe, that it has
// drained.
func heldMaster(t *testing.T, f *fakeRouters, workers int) (*Master, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() }) // r is the master's: it closes it
	cfg := fakeConfig(t, workers, "app-v1")
	cfg.Handover = process.HandoverExclusive
	m, _ := fakeMaster(t, cfg, f, Options{UpgradeDrained: r})
	return m, w
}

// The old master's word that it has drained takes the loop's priority path: a hot
// upgrade's routers are released while a reload waits for a router, not once the whole
// reload is done.
func TestReleaseDoesNotWaitForAnOperation(t *testing.T) {
	f := newFakeRouters()
	f.hold = make(chan struct{})
	m, drained := heldMaster(t, f, 2)
	if !m.snapshot().held {
		t.Fatal("a hot upgrade's new master under --handover exclusive does not hold its routers' keys")
	}
	reloaded := make(chan error, 1)
	go func() { reloaded <- m.Reload(context.Background()) }()
	f.waitFor(t, "the reload's first restart", func(e string) bool { return strings.HasPrefix(e, "restart 0") })
	if err := descend.WordDrained.Say(drained); err != nil {
		t.Fatal(err)
	}
	// A fake router answers one message at a time: worker 0, in its restart, gets its
	// Release after it.
	f.waitFor(t, "worker 1 released during the reload", func(e string) bool { return e == "release 1" })
	if m.snapshot().held {
		t.Error("the routers are being released, but the view still says they hold their keys")
	}
	select {
	case err := <-reloaded:
		t.Fatalf("the reload ended (%v) while a router held its restart", err)
	default:
	}
	close(f.hold)
	if err := recvErr(t, "Reload", reloaded); err != nil {
		t.Errorf("Reload: %v", err)
	}
	f.waitFor(t, "worker 0 released", func(e string) bool { return e == "release 0" })
}

// A router that joins while the keys are held (a scale before the old master has drained)
// holds its keys too; one that joins after the release does not.
func TestRouterJoiningWhileHeldIsHeld(t *testing.T) {
	f := newFakeRouters()
	m, drained := heldMaster(t, f, 1)
	if err := m.Scale(testContext(t), 2); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "worker 1 configured held", func(e string) bool { return e == "held 1" })
	if err := descend.WordDrained.Say(drained); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "worker 1 released", func(e string) bool { return e == "release 1" })
	waitUntil(t, "the view to say the keys are released", func() bool { return !m.snapshot().held })
	if err := m.Scale(testContext(t), 3); err != nil {
		t.Fatal(err)
	}
	for _, e := range f.take() {
		if e == "held 2" {
			t.Errorf("worker 2, started after the release, was configured to hold its keys")
		}
	}
}
