package process

import (
	"testing"
	"time"
)

// Bounded waits: a test that fails by hanging until the suite's limit costs a whole run and
// says nothing, so every wait has a deadline and says what it waited for.

// waitDone waits up to d for ch to be closed or to deliver, and fails the test, saying what
// it waited for, if it is not.
func waitDone[T any](t testing.TB, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ch:
	case <-tm.C:
		t.Fatalf("waited %s for %s", d, what)
	}
}
