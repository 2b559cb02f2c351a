package process

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/olio-dev/olio/monitor"
)

// An app that listens, but not on $PORT (python3 -m http.server binds 0.0.0.0:8000 unless
// told otherwise), is reported within seconds instead of only at --ready-timeout: while
// the router waits for the port, it looks every portCheckEvery at the TCP sockets the
// app's processes listen on (their /proc/PID/fd socket inodes, found in
// /proc/PID/net/tcp and tcp6).

// portCheckEvery spaces the looks at the app's sockets; a report needs two looks in a row
// that agree, so that an app opening another port just before $PORT is not reported.
const portCheckEvery = time.Second

// procRoot is where /proc is (a test points it at a fake).
var procRoot = "/proc"

// watchPort reports, once, an app process c that listens on TCP but not where the router
// waits for it (127.0.0.1:port). It returns when ctx ends.
func (a *apps) watchPort(ctx context.Context, c *monitor.Child, port int) {
	t := time.NewTicker(portCheckEvery)
	defer t.Stop()
	var last []netip.AddrPort
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		addrs := appListens(c.Pid())
		if len(addrs) == 0 || slices.ContainsFunc(addrs, func(ap netip.AddrPort) bool { return reachesPort(ap, port) }) {
			last = nil
			continue
		}
		if !slices.Equal(addrs, last) {
			last = addrs
			continue
		}
		select {
		case <-ctx.Done(): // ready meanwhile, or given up
			return
		default:
		}
		names := make([]string, len(addrs))
		for i, ap := range addrs {
			names[i] = ap.String()
		}
		a.logger.Error(fmt.Sprintf("app %d (pid %d) listens on %s, not on $PORT=%d (127.0.0.1:%d): its keys get 503 until it does; "+
			"give it its port from $PORT, e.g. -- sh -c 'exec python3 -m http.server --bind 127.0.0.1 \"$PORT\"'",
			a.host.conf().Index, c.Pid(), strings.Join(names, ", "), port, port), "app_pid", c.Pid())
		return
	}
}

// reachesPort says whether a socket listening on ap takes the router's connections to
// 127.0.0.1:port.
func reachesPort(ap netip.AddrPort, port int) bool {
	if int(ap.Port()) != port {
		return false
	}
	ip := ap.Addr().Unmap()
	return ip.IsUnspecified() || ip == netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// appListens returns the TCP addresses pid listens on, sorted, or, when it listens on none,
// those its descendants listen on (an app started through a shell without exec).
func appListens(pid int) []netip.AddrPort {
	tables := listenTables(pid)
	addrs := listensOf(pid, tables)
	if len(addrs) == 0 {
		for _, p := range descendants(pid) {
			addrs = append(addrs, listensOf(p, tables)...)
		}
	}
	slices.SortFunc(addrs, func(x, y netip.AddrPort) int { return x.Compare(y) })
	return slices.Compact(addrs)
}

// listensOf returns the addresses in tables (by socket inode) of pid's open sockets.
func listensOf(pid int, tables map[uint64]netip.AddrPort) []netip.AddrPort {
	if len(tables) == 0 {
		return nil
	}
	dir := filepath.Join(procRoot, strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []netip.AddrPort
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		s, ok := strings.CutPrefix(link, "socket:[")
		if !ok {
			continue
		}
		inode, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
		if err != nil {
			continue
		}
		if ap, ok := tables[inode]; ok {
			out = append(out, ap)
		}
	}
	return out
}

// listenTables reads the listening TCP sockets of pid's network namespace, by inode.
func listenTables(pid int) map[uint64]netip.AddrPort {
	m := map[uint64]netip.AddrPort{}
	for _, name := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(procRoot, strconv.Itoa(pid), "net", name))
		if err != nil {
			continue
		}
		parseListening(bufio.NewScanner(f), m)
		f.Close()
	}
	return m
}

// tcpListen is the state of a listening socket in /proc/net/tcp.
const tcpListen = "0A"

// parseListening adds to m the listening sockets of a /proc/net/tcp or tcp6 table:
//
//	sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
//	0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000 1000 0 31769 ...
//
// An address is its 32-bit words in hex, each in the host's byte order; the port is in hex.
func parseListening(sc *bufio.Scanner, m map[uint64]netip.AddrPort) {
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[3] != tcpListen {
			continue
		}
		host, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		raw, err := hex.DecodeString(host)
		if err != nil || (len(raw) != 4 && len(raw) != 16) {
			continue
		}
		for i := 0; i < len(raw); i += 4 {
			binary.NativeEndian.PutUint32(raw[i:], binary.BigEndian.Uint32(raw[i:]))
		}
		ip, _ := netip.AddrFromSlice(raw)
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			continue
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil || inode == 0 {
			continue
		}
		m[inode] = netip.AddrPortFrom(ip, uint16(port))
	}
}

// descendants returns the pids under pid, found by their parent in /proc/PID/stat.
func descendants(pid int) []int {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			if f := strings.Fields(s[i+1:]); len(f) >= 2 {
				if pp, err := strconv.Atoi(f[1]); err == nil {
					parent[p] = pp
				}
			}
		}
	}
	var out []int
	under := map[int]bool{pid: true}
	for changed := true; changed; {
		changed = false
		for p, pp := range parent {
			if under[pp] && !under[p] {
				under[p] = true
				out = append(out, p)
				changed = true
			}
		}
	}
	return out
}

// appPortWatch runs watchPort while the router waits for the app's port; the returned
// function stops it and waits for it.
func (a *apps) appPortWatch(ctx context.Context, c *monitor.Child, port int) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.watchPort(ctx, c, port)
	}()
	return func() {
		cancel()
		<-done
	}
}
