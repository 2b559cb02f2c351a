package process

import (
	"bufio"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The listening sockets of /proc/net/tcp and tcp6, as a little-endian kernel writes them.
func TestParseListening(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the fixtures are a little-endian kernel's")
	}
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 101 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 102 1 0000000000000000 100 0 0 10 0
   2: 0100007F:9C40 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 103 1 0000000000000000 20 4 30 10 -1
`
	tcp6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F41 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 201 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F42 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 202 1 0000000000000000 100 0 0 10 0
`
	m := map[uint64]netip.AddrPort{}
	parseListening(bufio.NewScanner(strings.NewReader(tcp)), m)
	parseListening(bufio.NewScanner(strings.NewReader(tcp6)), m)
	want := map[uint64]string{101: "0.0.0.0:8000", 102: "127.0.0.1:40000", 201: "[::1]:8001", 202: "[::ffff:127.0.0.1]:8002"}
	if len(m) != len(want) {
		t.Errorf("%d sockets, want %d (the established one is not listening): %v", len(m), len(want), m)
	}
	for inode, addr := range want {
		if g := m[inode].String(); g != addr {
			t.Errorf("inode %d: %s, want %s", inode, g, addr)
		}
	}
	for addr, ok := range map[string]bool{"0.0.0.0:40000": true, "127.0.0.1:40000": true, "[::]:40000": true,
		"[::ffff:127.0.0.1]:40000": true, "[::1]:40000": false, "0.0.0.0:8000": false, "10.0.0.1:40000": false} {
		if g := reachesPort(netip.MustParseAddrPort(addr), 40000); g != ok {
			t.Errorf("reachesPort(%s, 40000) = %v, want %v", addr, g, ok)
		}
	}
}

// appListens finds the app's listening sockets through its fds, or, when it has none, its
// children's (an app started by a shell that did not exec).
func TestAppListens(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the fixtures are a little-endian kernel's")
	}
	root := t.TempDir()
	old := procRoot
	procRoot = root
	t.Cleanup(func() { procRoot = old })
	proc := func(pid, ppid string, links ...string) {
		dir := filepath.Join(root, pid)
		for _, d := range []string{"fd", "net"} {
			if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		for i, l := range links {
			if err := os.Symlink(l, filepath.Join(dir, "fd", string(rune('0'+i)))); err != nil {
				t.Fatal(err)
			}
		}
		os.WriteFile(filepath.Join(dir, "stat"), []byte(pid+" (a (b) c) S "+ppid+" 1 1 0"), 0o600)
		os.WriteFile(filepath.Join(dir, "net", "tcp"), []byte(`  sl  local_address rem_address   st
   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 101 1
   1: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 102 1
`), 0o600)
	}
	proc("10", "1", "/dev/null", "pipe:[7]")        // the shell: no socket
	proc("11", "10", "socket:[101]", "/x")          // its child: 0.0.0.0:8000
	proc("12", "11", "socket:[102]")                // a grandchild: 127.0.0.1:8001
	proc("20", "1", "socket:[102]", "socket:[999]") // not under 10
	got := appListens(10)
	want := []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:8000"), netip.MustParseAddrPort("127.0.0.1:8001")}
	if !slices.Equal(got, want) {
		t.Errorf("appListens(10) = %v, want %v", got, want)
	}
	if got := appListens(20); !slices.Equal(got, want[1:]) {
		t.Errorf("appListens(20) = %v, want %v (its own socket, not its children's)", got, want[1:])
	}
}
