package mux

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
)

// SocketFile is the file of a unix socket this process bound with ListenUnix or
// ListenUnixgram. Remove deletes it only while it is still that file: a successor (a
// restarted router, a hot upgrade's new master) may have bound its own at the same path
// since. A SocketFile is not safe for concurrent use.
type SocketFile struct {
	path string
	fi   os.FileInfo
}

// ListenUnix binds a unix stream socket at path with mode 0600, replacing a stale socket
// file there; any other kind of file at path is an error. Closing the listener leaves the
// file: remove it with the SocketFile.
func ListenUnix(path string) (*net.UnixListener, *SocketFile, error) {
	ln, f, err := bind(path, "unix", net.ListenUnix)
	if err == nil {
		ln.SetUnlinkOnClose(false)
	}
	return ln, f, err
}

// ListenUnixgram binds a unix datagram socket at path as ListenUnix binds a stream one.
func ListenUnixgram(path string) (*net.UnixConn, *SocketFile, error) {
	return bind(path, "unixgram", net.ListenUnixgram)
}

// bind binds a socket of network at path with listen, gives its file mode 0600 and records
// which file it is; on failure it closes the socket and removes the file.
func bind[C io.Closer](path, network string, listen func(string, *net.UnixAddr) (C, error)) (C, *SocketFile, error) {
	var none C
	if err := removeStale(path); err != nil {
		return none, nil, err
	}
	c, err := listen(network, &net.UnixAddr{Name: path, Net: network})
	if err != nil {
		return none, nil, fmt.Errorf("mux: %w", err)
	}
	err = os.Chmod(path, 0o600)
	var fi os.FileInfo
	if err == nil {
		fi, err = os.Lstat(path)
	}
	if err != nil {
		c.Close()
		os.Remove(path)
		return none, nil, fmt.Errorf("mux: listen %s: %w", path, err)
	}
	return c, &SocketFile{path: path, fi: fi}, nil
}

// removeStale removes a leftover socket file at path, and refuses to touch anything else.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mux: listen %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("mux: listen %s: file exists and is not a socket (%v)", path, fi.Mode().Type())
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("mux: listen %s: removing stale socket: %w", path, err)
	}
	return nil
}

// Path is where the socket file is now.
func (f *SocketFile) Path() string { return f.path }

// Remove removes the socket file if it is still the one bound; a file another process has
// put at the path since is left alone.
func (f *SocketFile) Remove() error {
	fi, err := os.Lstat(f.path)
	if err != nil || !os.SameFile(fi, f.fi) {
		return nil
	}
	if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("mux: remove %s: %w", f.path, err)
	}
	return nil
}

// Rename moves the socket file to path (on the same file system), replacing whatever is
// there in one step, as rename(2) does.
func (f *SocketFile) Rename(path string) error {
	if err := os.Rename(f.path, path); err != nil {
		return fmt.Errorf("mux: %w", err)
	}
	f.path = path
	return nil
}
