package listener

import (
	"testing"

	"github.com/olio-dev/olio/descend"
)

// Every message the master sends and waits an answer for carries its request ID where
// call finds it (a message missing here is never answered: its call waits to its end).
func TestIDOfEveryRequest(t *testing.T) {
	for _, m := range []descend.Message{
		&descend.Membership{ID: 7}, &descend.Restart{ID: 7}, &descend.Drain{ID: 7},
		&descend.StatsRequest{ID: 7}, &descend.Prepare{ID: 7}, &descend.Release{ID: 7},
		&descend.KeysRequest{ID: 7}, &descend.Reopen{ID: 7},
	} {
		if got := idOf(m); got != 7 {
			t.Errorf("idOf(%s) = %d, want 7", m.Type(), got)
		}
	}
}
