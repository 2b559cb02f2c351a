package listener

import (
	"slices"
	"testing"
)

// A reload that adds workers starts them on the new app and restarts only the workers
// that ran before it: a new worker is started once, not started and then restarted.
func TestReloadRestartsOnlyTheWorkersThatRanBefore(t *testing.T) {
	f := newFakeRouters()
	m, _ := fakeMaster(t, fakeConfig(t, 2, "app-v1"), f, Options{Reload: func() (Config, error) { return fakeConfig(t, 3, "app-v2"), nil }})
	var steps []Progress
	if err := m.Reload(withProgress(testContext(t), func(p Progress) { steps = append(steps, p) })); err != nil {
		t.Fatal(err)
	}
	want := []string{"restart 0 onto app-v2", "restart 1 onto app-v2"}
	if g := matching(f.take(), "restart"); !slices.Equal(g, want) {
		t.Errorf("the reload restarted %q, want %q (worker 2 starts on app-v2)", g, want)
	}
	var got []string
	for _, p := range steps {
		got = append(got, p.Step+" "+string(rune('0'+p.Index)))
	}
	if want := []string{"start 2", "restart 0", "restart 1"}; !slices.Equal(got, want) {
		t.Errorf("the reload's steps were %q, want %q", got, want)
	}
	checkTable(t, m, f, 3, 2)
}
