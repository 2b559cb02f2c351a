package test

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// listenInode returns the socket inode of the TCP listener on port (from /proc/net/tcp).
func listenInode(t *testing.T, port int) string {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Skip("no /proc/net/tcp")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		// sl local_address rem_address st ... inode (field 9)
		if len(fields) > 9 && fields[3] == "0A" && strings.HasSuffix(fields[1], fmt.Sprintf(":%04X", port)) {
			return fields[9]
		}
	}
	t.Fatalf("no listener on port %d in /proc/net/tcp", port)
	return ""
}

// The public listening socket belongs to the master and routers only: an app that held it
// would keep the port bound after olio stopped, and could accept olio's connections.
func TestAppsDoNotInheritTheListener(t *testing.T) {
	c := Start(t, "--workers", "2")
	port, _ := strconv.Atoi(c.Addr[strings.LastIndexByte(c.Addr, ':')+1:])
	checkHolders(t, c, "socket:["+listenInode(t, port)+"]", "the public listener")
}

// The master's stdout goes to every router as fd 5 (for --access-log -), never further: an
// app that held it would write into olio's output unseen.
func TestAppsDoNotInheritTheMastersStdout(t *testing.T) {
	c := Start(t, "--workers", "2")
	stdout, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", c.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	checkHolders(t, c, stdout, "the master's stdout")
}

// checkHolders checks that the open file target (a /proc/PID/fd link's text) is held by
// some router of c and by none of its apps.
func checkHolders(t *testing.T, c *Cluster, target, what string) {
	t.Helper()
	holders := map[string]bool{}
	for _, pid := range c.Descendants() {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		role := "router"
		if strings.Contains(string(cmdline), "demo") {
			role = "app"
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); link == target {
				holders[role] = true
				if role == "app" {
					t.Errorf("app pid %d holds %s (%s) as fd %s", pid, what, target, fd.Name())
				}
			}
		}
	}
	if !holders["router"] {
		t.Errorf("no router holds %s (%s): the test does not see what it should", what, target)
	}
}
