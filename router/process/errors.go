package process

import "errors"

// ErrMasterGone means the descend socket closed: the master exited.
var ErrMasterGone = errors.New("router: master went away")
