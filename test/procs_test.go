package test

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
// tcpLookup; the test is skipped where the kernel does not answer it.
func listenInode(t testing.TB, addr string) string {
	t.Helper()
	tcp, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s, found, err := tcpLookup(tcp, &net.TCPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Skipf("no sock_diag to find the listening socket: %v", err)
	}
	if !found || s.state != 10 { // TCP_LISTEN
		t.Fatalf("no listening socket on %s", addr)
	}
	return strconv.FormatUint(s.inode, 10)
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

// tcpSocket is what the kernel says of one TCP socket (see tcpLookup).
type tcpSocket struct {
	state  uint8  // TCP_ESTABLISHED is 1
	unread uint32 // bytes received and not yet read
	inode  uint64 // 0 until the socket is accepted
}

// tcpLookup asks the kernel (sock_diag over netlink) for the IPv4 TCP socket whose local
// address is local and remote address remote: found is false if there is none. Unlike a
// pass over /proc/net/tcp, it is an exact lookup in the caller's network namespace:
// /proc/net/tcp is written a page per read, resuming at a count of sockets that others
// opening and closing meanwhile (tests in parallel) can shift, and it shows the namespace
// of the process's main thread.
func tcpLookup(local, remote *net.TCPAddr) (s tcpSocket, found bool, err error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.NETLINK_INET_DIAG)
	if err != nil {
		return s, false, err
	}
	defer syscall.Close(fd)
	const sockDiagByFamily, hdr = 20, syscall.NLMSG_HDRLEN
	req := make([]byte, hdr+56)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(req[6:], syscall.NLM_F_REQUEST)
	b := req[hdr:]
	b[0], b[1] = syscall.AF_INET, syscall.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:], 0xffffffff) // every state
	id := b[8:]                                      // inet_diag_sockid, ports and addresses in network order
	binary.BigEndian.PutUint16(id[0:], uint16(local.Port))
	binary.BigEndian.PutUint16(id[2:], uint16(remote.Port))
	copy(id[4:8], local.IP.To4())
	copy(id[20:24], remote.IP.To4())
	binary.NativeEndian.PutUint32(id[40:], 0xffffffff) // INET_DIAG_NOCOOKIE
	binary.NativeEndian.PutUint32(id[44:], 0xffffffff)
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return s, false, err
	}
	buf := make([]byte, 8192)
	n, _, err := syscall.Recvfrom(fd, buf, 0)
	if err != nil {
		return s, false, err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil || len(msgs) == 0 {
		return s, false, fmt.Errorf("sock_diag: %d bytes, %v", n, err)
	}
	m := msgs[0]
	if m.Header.Type == syscall.NLMSG_ERROR {
		if errno := -int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 && syscall.Errno(errno) != syscall.ENOENT {
			return s, false, fmt.Errorf("sock_diag: %w", syscall.Errno(errno))
		}
		return s, false, nil
	}
	if m.Header.Type != sockDiagByFamily || len(m.Data) < 72 {
		return s, false, fmt.Errorf("sock_diag: message type %d of %d bytes", m.Header.Type, len(m.Data))
	}
	d := m.Data // inet_diag_msg
	// Without an established socket the kernel answers with a listener on local: not this one.
	if binary.BigEndian.Uint16(d[6:]) != uint16(remote.Port) {
		return s, false, nil
	}
	return tcpSocket{state: d[1], unread: binary.NativeEndian.Uint32(d[56:]), inode: uint64(binary.NativeEndian.Uint32(d[68:]))}, true, nil
}
