package process

import (
	"slices"
	"testing"
)

// ChildEnv drops every variable of the list, whatever its value, keeps every other (another
// OLIO_ variable too, such as $OLIO_PPROF, which routers read), and appends what it is given.
func TestChildEnv(t *testing.T) {
	var environ []string
	for _, name := range ScrubbedEnv() {
		environ = append(environ, name+"=from-the-parent", name+"=")
	}
	keep := []string{"HOME=/home/u", "OLIO_PPROF=127.0.0.1:6060", "PORTABLE=1", "NO_EQUALS_SIGN"}
	environ = append(environ, keep...)
	got := ChildEnv(environ, "PORT=8001", "OLIO_INDEX=3")
	if want := append(keep, "PORT=8001", "OLIO_INDEX=3"); !slices.Equal(got, want) {
		t.Errorf("ChildEnv = %q, want %q", got, want)
	}
	for _, name := range []string{"NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "PORT", "OLIO_SECRET",
		"OLIO_INDEX", "OLIO_WORKERS", "OLIO_ADDR", "OLIO_CLUSTER_ADDR", EnvEmbedded, EnvLogFormat} {
		if !slices.Contains(ScrubbedEnv(), name) {
			t.Errorf("%s is not scrubbed: a child would inherit it", name)
		}
	}
}
