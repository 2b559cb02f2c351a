package descend

import (
	"testing"

	"github.com/olio-dev/olio/monitor"
)

// The state names are on the wire, and are the app supervisor's own: a router reports its
// monitor.State as it is.
func TestStatesPinned(t *testing.T) {
	for _, c := range []struct {
		state WorkerState
		sup   monitor.State
		name  string
	}{
		{StateStarting, monitor.StateStarting, "starting"},
		{StateReady, monitor.StateReady, "ready"},
		{StateBackoff, monitor.StateBackoff, "backoff"},
		{StateStopping, monitor.StateStopping, "stopping"},
		{StateStopped, monitor.StateStopped, "stopped"},
	} {
		if g, e := string(c.state), c.name; g != e {
			t.Errorf("state %q, want %q", g, e)
		}
		if g, e := WorkerState(c.sup), c.state; g != e {
			t.Errorf("the supervisor's %q is %q here, want %q", c.sup, g, e)
		}
	}
}
