package descend

import "errors"

var (
	// ErrVersion means a frame carried a protocol version this side does not speak.
	ErrVersion = errors.New("descend: protocol version mismatch")
	// ErrUnknownType means a frame named a message type this side does not know.
	ErrUnknownType = errors.New("descend: unknown message type")
	// ErrMalformed means a frame could not be decoded.
	ErrMalformed = errors.New("descend: malformed frame")
	// ErrTooLarge means a frame was longer than MaxFrame.
	ErrTooLarge = errors.New("descend: frame too large")
	// ErrHandshake means a router's connection did not open with Hello, Config and
	// Membership in that order (see Join).
	ErrHandshake = errors.New("descend: handshake out of order")
	// ErrNoHandler means Dispatch found no handler for a message's type.
	ErrNoHandler = errors.New("descend: no handler for message")
)
