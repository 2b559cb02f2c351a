package listener

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Bind binds the public listener and returns it as a file to hand to routers. The socket
// is a plain TCP listener: one accept queue shared by every router, so a router that exits
// leaves no connection stranded in a queue of its own (as SO_REUSEPORT would).
func Bind(addr string) (*os.File, net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("cannot listen on %s: the address is already in use; stop what holds it or pick another with --listen", addr)
		}
		return nil, nil, fmt.Errorf("cannot listen on %s: %w; check --listen", addr, err)
	}
	defer ln.Close()
	f, err := listenerFile(ln.(*net.TCPListener))
	if err != nil {
		return nil, nil, fmt.Errorf("listener file: %w", err)
	}
	return f, ln.Addr(), nil
}

// listenerFile dups ln's descriptor into a file that stays non-blocking when its Fd is
// taken. (*net.TCPListener).File would return one whose Fd — called by os/exec for every
// router started — puts the socket in blocking mode: the flag belongs to the socket, shared
// by every router, and a router whose accept ran in that window stayed blocked in the
// kernel until the next connection, so its graceful stop hung (test/hostile_test.go).
func listenerFile(ln *net.TCPListener) (*os.File, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var dupErr error
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, dupErr
	}
	return os.NewFile(uintptr(fd), "olio-listener"), nil
}

// fileAddr returns the local address of an inherited listening socket.
func fileAddr(f *os.File) (net.Addr, error) {
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("inherited listener: %w", err)
	}
	defer ln.Close()
	return ln.Addr(), nil
}
