package monitor

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv("OLIO_MONITOR_HELPER") == "deathsig" {
		deathsigHelper()
		return
	}
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(StarterGoroutine))
}

// deathsigHelper runs in a child test binary: it starts a long sleep, prints
// its pid and exits, so the test can see the sleep die with its parent.
func deathsigHelper() {
	c, err := Start(OS, &Command{Name: "sleep", Path: "/bin/sleep", Args: []string{"1000"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println(c.Pid())
	os.Exit(0)
}

// deadline is how long a test waits for something that should happen at once.
const deadline = 10 * time.Second
