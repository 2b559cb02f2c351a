package test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// handoverNotices reads the hand-over notices the recorder apps in dir got: by pid, the
// lines "REASON WORKERS NEW_WORKERS".
func handoverNotices(t *testing.T, dir string) map[int][]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "handover-*.notices"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int][]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			pid, rest, _ := strings.Cut(line, " ")
			n, _ := strconv.Atoi(pid)
			out[n] = append(out[n], rest)
		}
	}
	return out
}

// waitNotices waits until every pid in pids has had the notice want.
func waitNotices(t *testing.T, dir string, pids []int, want string) {
	t.Helper()
	var got map[int][]string
	if !Eventually(20*time.Second, func() bool {
		got = handoverNotices(t, dir)
		for _, pid := range pids {
			if !slices.Contains(got[pid], want) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("notice %q not received by every one of %v; notices by pid: %v", want, pids, got)
	}
}

// TestHandoverNotice: with --handover-path, every app is told before keys leave it: on a
// scale (the counts before and after), and on a rolling restart (the instance being
// replaced). The embedded variant gets the same through router.OnHandover.
func TestHandoverNotice(t *testing.T) {
	t.Parallel()
	for _, embedded := range []bool{false, true} {
		t.Run(map[bool]string{false: "app", true: "embedded"}[embedded], func(t *testing.T) {
			c, dir := startRecorder(t, embedded, "--workers", "2", "--handover-path", "/olio/handover")
			before := appPIDs(t, c, 2)
			if out, err := opCLI(t, "scale", "--control", c.Control, "3"); err != nil {
				t.Fatalf("olio scale 3: %v\n%s", err, out)
			}
			waitNotices(t, dir, before, "scale 2 3")
			three := appPIDs(t, c, 3)
			hup(t, c, 60*time.Second)
			waitNotices(t, dir, three, "restart 3 3")
		})
	}
}
