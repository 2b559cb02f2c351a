package router

import "errors"

var (
	// ErrNoConfig means the master's first message was not a Config.
	ErrNoConfig = errors.New("router: expected a config message from the master")
	// ErrMasterGone means the descend socket closed: the master exited.
	ErrMasterGone = errors.New("router: master went away")
	// ErrBadKeySpec is wrapped by every error ParseKeySpec returns; the error's text says what was
	// wrong with the spec and lists the valid forms.
	ErrBadKeySpec = errors.New("router: bad key spec")
)
