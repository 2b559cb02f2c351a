package mux

import (
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// A datagram socket is bound as a stream one: mode 0600, over a stale socket, never over
// another kind of file.
func TestListenUnixgram(t *testing.T) {
	dir := t.TempDir()
	precious := filepath.Join(dir, "precious")
	if err := os.WriteFile(precious, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, _, err := ListenUnixgram(precious); err == nil {
		c.Close()
		t.Fatal("ListenUnixgram over a regular file succeeded")
	}
	if b, err := os.ReadFile(precious); err != nil || string(b) != "data" {
		t.Fatalf("file changed: %q, %v", b, err)
	}

	path := filepath.Join(dir, "dgram.sock")
	stale, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	stale.Close() // a datagram socket leaves its file behind
	c, f, err := ListenUnixgram(path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	defer c.Close()
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket file %v, %v; want a socket with mode 0600", fi, err)
	}
	removeAt(t, f, path)
}

// Remove leaves a socket another process has bound at the path since; Rename follows the
// file, so Remove still finds it.
func TestSocketFileRemoveOnlyOurs(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.sock")
	ln, f, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln2, f2, err := ListenUnix(path) // a successor replaces it
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if err := f.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Remove took the successor's socket: %v", err)
	}

	moved := filepath.Join(dir, "b.sock")
	if err := f2.Rename(moved); err != nil {
		t.Fatal(err)
	}
	removeAt(t, f2, moved)
}

// removeAt checks that f is at path, removes it, and checks that nothing is left there.
func removeAt(t *testing.T, f *SocketFile, path string) {
	t.Helper()
	if f.Path() != path {
		t.Errorf("Path = %q, want %q", f.Path(), path)
	}
	if err := f.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("after Remove: %v, want no file at %s", err, path)
	}
}
