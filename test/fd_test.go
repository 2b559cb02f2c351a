package test

import (
	"fmt"
	"os"
	"testing"
)

// The public listening socket belongs to the master and routers only: an app that held it
// could accept clients itself, past the routing and the secret, and would keep the port
// bound after olio stopped. (This is the one check of it; TestCore used to repeat it.)
func TestAppsDoNotInheritTheListener(t *testing.T) {
	t.Parallel()
	const workers = 2
	c := Start(t, "--workers", fmt.Sprint(workers))
	checkHolders(t, c, workers, "socket:["+listenInode(t, c.Addr)+"]", "the public listener")
}

// The master's stdout goes to every router as fd 5 (for --access-log -), never further: an
// app that held it would write into olio's output unseen.
func TestAppsDoNotInheritTheMastersStdout(t *testing.T) {
	t.Parallel()
	const workers = 2
	c := Start(t, "--workers", fmt.Sprint(workers))
	stdout, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", c.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	checkHolders(t, c, workers, stdout, "the master's stdout")
}

// checkHolders checks that the open file target (a /proc/PID/fd link's text) is held by
// every one of the cluster's routers and by none of its apps (every other process under
// the master, the app pids each worker answers with among them).
func checkHolders(t *testing.T, c *Cluster, workers int, target, what string) {
	t.Helper()
	apps := appPIDs(t, c, workers)
	routers := c.routers()
	if len(routers) != workers {
		t.Fatalf("routers %v under the master, want %d", routers, workers)
	}
	held := holders(append(c.Descendants(), apps...), target)
	for i, pid := range routers {
		if _, ok := held[pid]; !ok {
			t.Errorf("router %d (pid %d) does not hold %s (%s): the test does not see what it should", i, pid, what, target)
		}
		delete(held, pid)
	}
	for pid, fd := range held {
		t.Errorf("pid %d, not a router (apps %v), holds %s (%s) as fd %s", pid, apps, what, target, fd)
	}
}
