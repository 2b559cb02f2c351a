package listener

import "errors"

var (
	// ErrConfig means a configuration value is invalid; the message says which and how to
	// fix it.
	ErrConfig = errors.New("invalid configuration")
	// ErrStopped means the master is stopping or has stopped.
	ErrStopped = errors.New("olio is stopping")
	// ErrBusy means another reload, resize or upgrade is in progress.
	ErrBusy = errors.New("another reload, resize or upgrade is in progress")
	// ErrNoRouter means a worker has no live router to ask.
	ErrNoRouter = errors.New("worker has no live router")
)
