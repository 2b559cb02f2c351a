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
		return nil, nil, listenError("--listen", addr, err)
	}
	defer ln.Close()
	f, err := listenerFile(ln.(*net.TCPListener))
	if err != nil {
		return nil, nil, fmt.Errorf("listener file: %w", err)
	}
	return f, ln.Addr(), nil
}

// listenError says why binding addr, the value of flag, failed and what to do about it.
func listenError(flag, addr string, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return &causeError{fmt.Sprintf("cannot listen on %s: the address is already in use; stop what holds it or pick another with %s", addr, flag), err}
	case errors.Is(err, syscall.EACCES):
		return &causeError{fmt.Sprintf("cannot listen on %s: permission denied: ports below 1024 need root or the CAP_NET_BIND_SERVICE capability (under systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE); or pick a port from 1024 up with %s", addr, flag), err}
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return &causeError{fmt.Sprintf("cannot listen on %s: no interface of this machine has that address; check %s", addr, flag), err}
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err // "listen tcp ADDR:" says again what the message says
	}
	return fmt.Errorf("cannot listen on %s: %w; check %s", addr, err, flag)
}

// causeError is a message written for people that still answers errors.Is for its cause.
type causeError struct {
	msg   string
	cause error
}

func (e *causeError) Error() string { return e.msg }
func (e *causeError) Unwrap() error { return e.cause }

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
