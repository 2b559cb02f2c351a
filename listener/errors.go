package listener

import "errors"

var (
	// ErrConfig means a configuration value is invalid; the message says which and how to
	// fix it.
	ErrConfig = errors.New("invalid configuration")
	// ErrStopped means the master is stopping or has stopped.
	ErrStopped = errors.New("olio is stopping")
	// ErrNoRouter means a worker has no live router to ask.
	ErrNoRouter = errors.New("worker has no live router")
	// ErrUpgrade means a hot upgrade failed; the old master keeps serving.
	ErrUpgrade = errors.New("upgrade failed; the running olio keeps serving")
	// ErrControlInUse means another olio (or something else) answers on the control socket
	// path, so this master refuses to start rather than steal it.
	ErrControlInUse = errors.New("another olio answers on the control socket")
	// ErrPIDFileInUse means the --pidfile names a running olio master, so this one refuses
	// to start rather than overwrite the file (and remove it when it exits).
	ErrPIDFileInUse = errors.New("another olio is running with this pidfile")
	// ErrRolledBack means a reload failed part way and the master went back to the
	// configuration it ran before; the message says what failed.
	ErrRolledBack = errors.New("reload failed; the previous configuration is back in place")
	// ErrNoControl means nothing answers on a control socket path: no olio runs with that
	// --control.
	ErrNoControl = errors.New("no olio answers on the control socket")
	// ErrNotPrivate means the directory of the default control socket is not one that only
	// this user can use (PrivateDir).
	ErrNotPrivate = errors.New("not a private directory")
	// ErrControlPeer means the process serving a control socket runs as another user (and
	// not as root): the client sends it no command.
	ErrControlPeer = errors.New("the control socket is served by another user")
)
