package test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/olio-dev/olio/test/harness"
)

// The harness's view of processes and sockets, from /proc: who is alive, who is whose
// child, which process is which worker's router, and which socket is the public listener.

// alive returns the pids that still exist (and are not zombies).
func alive(pids []int) []int {
	var out []int
	for _, pid := range pids {
		if st, err := harness.ReadStat(pid); err == nil && st.State != "Z" {
			out = append(out, pid)
		}
	}
	return out
}

// parentPID returns a process's parent, 0 if it is gone.
func parentPID(pid int) int {
	st, _ := harness.ReadStat(pid)
	return st.PPid
}

// procArgs returns a process's arguments.
func procArgs(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// descendantsOf returns every process below pid (zombies too), from one pass over /proc.
func descendantsOf(pid int) []int {
	var out []int
	for _, k := range harness.Descendants(pid) {
		out = append(out, k.Pid)
	}
	return out
}

// Descendants returns every live process below the master, and remembers them so that
// cleanup can check they all exit.
func (c *Cluster) Descendants() []int {
	out := descendantsOf(c.Pid())
	c.seenMu.Lock()
	for _, pid := range out {
		c.seen[pid] = true
	}
	c.seenMu.Unlock()
	return out
}

// children returns the live children of pid among the master's descendants.
func (c *Cluster) children(pid int) []int {
	var out []int
	for _, p := range c.Descendants() {
		if parentPID(p) == pid {
			out = append(out, p)
		}
	}
	return out
}

// routers returns the live router pids by worker index: the master's children run as
// `olio router --index N` (or -index N, --index=N).
func (c *Cluster) routers() map[int]int {
	out := map[int]int{}
	for _, pid := range c.Descendants() {
		args := procArgs(pid)
		if len(args) < 2 || args[1] != "router" || parentPID(pid) != c.Pid() || len(alive([]int{pid})) == 0 {
			continue
		}
		for i, a := range args {
			v, ok := strings.CutPrefix(a, "--index=")
			if (a == "--index" || a == "-index") && i+1 < len(args) {
				v, ok = args[i+1], true
			}
			if n, err := strconv.Atoi(v); ok && err == nil {
				out[n] = pid
				break
			}
		}
	}
	return out
}

// listenInode returns the inode of the TCP socket listening on addr (host:port), from
// /proc/net/tcp; the test is skipped where there is no /proc/net/tcp.
func listenInode(t testing.TB, addr string) string {
	t.Helper()
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Skip("no /proc/net/tcp")
	}
	defer f.Close()
	local := procAddr(tcp)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st ... inode (field 9); st 0A is LISTEN
		if fields := strings.Fields(sc.Text()); len(fields) > 9 && fields[1] == local && fields[3] == "0A" {
			return fields[9]
		}
	}
	t.Fatalf("no listening socket on %s in /proc/net/tcp", addr)
	return ""
}

// procAddr formats an IPv4 address as /proc/net/tcp does.
func procAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	if ip == nil {
		return ""
	}
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port)
}

// holders returns the processes among pids that hold the open file target (a /proc/PID/fd
// link's text, such as socket:[inode]), each with the fd it is held as.
func holders(pids []int, target string) map[int]string {
	out := map[int]string{}
	for _, pid := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		fds, _ := os.ReadDir(dir)
		if i := slices.IndexFunc(fds, func(fd os.DirEntry) bool {
			link, _ := os.Readlink(dir + "/" + fd.Name())
			return link == target
		}); i >= 0 {
			out[pid] = fds[i].Name()
		}
	}
	return out
}
