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
	if err := removeStale(path); err != nil {
		return nil, nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("mux: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	f, err := own(path, ln)
	if err != nil {
		return nil, nil, err
	}
	return ln, f, nil
}

// ListenUnixgram binds a unix datagram socket at path as ListenUnix binds a stream one.
func ListenUnixgram(path string) (*net.UnixConn, *SocketFile, error) {
	if err := removeStale(path); err != nil {
		return nil, nil, err
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, nil, fmt.Errorf("mux: %w", err)
	}
	f, err := own(path, conn)
	if err != nil {
		return nil, nil, err
	}
	return conn, f, nil
}

// own gives the socket file c has just bound at path mode 0600 and records which file it
// is; on failure it closes c and removes the file.
func own(path string, c io.Closer) (*SocketFile, error) {
	err := os.Chmod(path, 0o600)
	var fi os.FileInfo
	if err == nil {
		fi, err = os.Lstat(path)
	}
	if err != nil {
		c.Close()
		os.Remove(path)
		return nil, fmt.Errorf("mux: listen %s: %w", path, err)
	}
	return &SocketFile{path: path, fi: fi}, nil
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
