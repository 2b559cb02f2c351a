package listener

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
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
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return nil, nil, fmt.Errorf("listener file: %w", err)
	}
	return f, ln.Addr(), nil
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
