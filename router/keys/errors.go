package keys

import "errors"

// ErrBadSpec is wrapped by every error Parse returns; the error's text says what was wrong
// with the spec and lists the valid forms.
var ErrBadSpec = errors.New("router: bad key spec")
