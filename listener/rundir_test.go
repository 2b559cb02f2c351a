package listener

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A run directory removed under the master is renewed before the next operation: a new
// name in the same parent, mode 0700, the old path left alone, every router told (the
// membership again, naming the new sockets), the status noting it.
func TestRunDirRenewedBeforeAnOperation(t *testing.T) {
	f := newFakeRouters()
	m, _ := fakeMaster(t, fakeConfig(t, 2, "app"), f, Options{})
	old := m.RunDir()
	if err := os.RemoveAll(old); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Scale(ctx, 2); err != nil { // nothing to do but the check
		t.Fatal(err)
	}
	dir := m.RunDir()
	if dir == old || filepath.Dir(dir) != filepath.Dir(old) {
		t.Fatalf("run dir %s after %s was removed: want a new one beside it", dir, old)
	}
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("new run dir: %v, %v", fi, err)
	}
	if _, err := os.Lstat(old); err == nil {
		t.Errorf("the old run dir %s was made again", old)
	}
	ev := f.take()
	for _, want := range []string{"membership 0: epoch 1, 2 workers", "membership 1: epoch 1, 2 workers"} {
		if !slices.Contains(ev, want) {
			t.Errorf("events %q lack %q", ev, want)
		}
	}
	st := m.Status(ctx)
	if st.RunDir != dir || !strings.Contains(st.RunDirNote, old+" was removed") || !strings.Contains(st.RunDirNote, dir) {
		t.Errorf("status: run dir %q, note %q", st.RunDir, st.RunDirNote)
	}
	if got := m.routerConfig(m.config(), 0).RunDir; got != dir {
		t.Errorf("a router starting now is configured with %s, want %s", got, dir)
	}
}

// A directory someone else put at the run directory's path is not taken for it, and is
// left alone; the master's own check (not an operation) renews it.
func TestRunDirReplacedIsRenewedAndLeftAlone(t *testing.T) {
	f := newFakeRouters()
	m, _ := fakeMaster(t, fakeConfig(t, 1, "app"), f, Options{})
	old := m.RunDir()
	if err := os.RemoveAll(old); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(old, 0o700); err != nil { // the squatter's, with the right mode
		t.Fatal(err)
	}
	squat := filepath.Join(old, "theirs")
	if err := os.WriteFile(squat, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a new run dir", func() bool { return m.RunDir() != old }) // runDirCheck is 1s
	if _, err := os.Lstat(squat); err != nil {
		t.Errorf("the directory put at the old path was touched: %v", err)
	}
	if note := m.Status(context.Background()).RunDirNote; !strings.Contains(note, "replaced") {
		t.Errorf("status note %q does not say it was replaced (dir %s, old %s)", note, m.RunDir(), old)
	}
}

// Routers run this process's own binary unless Options.Exe names another.
func TestRouterExe(t *testing.T) {
	if _, err := os.Stat(selfExe); err != nil {
		t.Skip("no /proc")
	}
	if g, e := ownBinary("/usr/bin/olio"), selfExe; g != e {
		t.Errorf("ownBinary: %s, want %s", g, e)
	}
	f := newFakeRouters()
	m, _ := fakeMaster(t, fakeConfig(t, 1, "app"), f, Options{})
	if g, e := m.routerExe, "/olio/test"; g != e {
		t.Errorf("with Options.Exe, routers run %s, want %s", g, e)
	}
}
