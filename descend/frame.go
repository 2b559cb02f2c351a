package descend

import (
	"encoding/json"
	"fmt"
)

// MaxFrame is the largest frame either side accepts, in bytes.
const MaxFrame = 1 << 20

// envelope is a frame's JSON body.
type envelope struct {
	V    int             `json:"v"`
	Type Type            `json:"type"`
	Body json.RawMessage `json:"body"`
}

// Encode returns the frame body (without its length prefix) for m.
func Encode(m Message) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("descend: encode %s: %w", m.Type(), err)
	}
	b, err := json.Marshal(envelope{V: Version, Type: m.Type(), Body: body})
	if err != nil {
		return nil, fmt.Errorf("descend: encode %s: %w", m.Type(), err)
	}
	if len(b) > MaxFrame {
		return nil, fmt.Errorf("%w: %s is %d bytes", ErrTooLarge, m.Type(), len(b))
	}
	return b, nil
}

// Decode parses one frame body into its typed message.
func Decode(b []byte) (Message, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if env.V != Version {
		return nil, fmt.Errorf("%w: got %d, speak %d", ErrVersion, env.V, Version)
	}
	mk, ok := registry[env.Type]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, env.Type)
	}
	m := mk()
	if len(env.Body) == 0 {
		return nil, fmt.Errorf("%w: %s without a body", ErrMalformed, env.Type)
	}
	if err := json.Unmarshal(env.Body, m); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, env.Type, err)
	}
	return m, nil
}
