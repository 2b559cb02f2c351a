package router

import "errors"

var (
	// ErrMasterGone means the descend socket closed: the master exited.
	ErrMasterGone = errors.New("router: master went away")
	// ErrBadKeySpec is wrapped by every error ParseKeySpec returns; the error's text says what was
	// wrong with the spec and lists the valid forms.
	ErrBadKeySpec = errors.New("router: bad key spec")
)
