package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// inherit adopts descriptor fd passed by the parent process. Inherited descriptors are
// not close-on-exec; it sets that flag, so the descriptor does not leak into the processes
// this one starts (a router's app must not hold the public listening socket).
func inherit(fd int, name string) (*os.File, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("descriptor %d (%s) was not passed: %w", fd, name, err)
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), name), nil
}

// inheritPipe is inherit for a pipe that is read while other things happen: in
// non-blocking mode, so that Go's poller serves it and Close interrupts a read.
func inheritPipe(fd int, name string) (*os.File, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("descriptor %d (%s) was not passed: %w", fd, name, err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("descriptor %d (%s): %w", fd, name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}
