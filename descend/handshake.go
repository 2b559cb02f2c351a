package descend

import "fmt"

// The handshake that opens every router's connection, in this order:
//
//	router → master  Hello       who it is
//	master → router  Config      everything it needs to run its worker
//	master → router  Membership  the worker count and peers (ID 0: not a request)
//
// after which either side may send anything. Join is the router's side, Welcome the
// master's.

// Join is a router's side of the handshake: it says h, then reads the master's Config and
// Membership. An error wraps ErrHandshake when the master answers out of order.
func Join(c *Conn, h *Hello) (*Config, *Membership, error) {
	if err := c.Send(h); err != nil {
		return nil, nil, err
	}
	cfg, err := recvAs[*Config](c, "config")
	if err != nil {
		return nil, nil, err
	}
	if cfg.Index != h.Index {
		return nil, nil, fmt.Errorf("%w: worker %d was configured as %d", ErrHandshake, h.Index, cfg.Index)
	}
	m, err := recvAs[*Membership](c, "membership")
	if err != nil {
		return nil, nil, err
	}
	return cfg, m, nil
}

// Welcome is the master's side of the handshake, once it has read the router's Hello: it
// sends cfg, then m.
func Welcome(c *Conn, cfg *Config, m *Membership) error {
	if err := c.Send(cfg); err != nil {
		return err
	}
	return c.Send(m)
}

// recvAs reads the next message, which must be a T (what names it).
func recvAs[T Message](c *Conn, what string) (T, error) {
	var zero T
	m, err := c.Recv()
	if err != nil {
		return zero, fmt.Errorf("descend: waiting for the %s: %w", what, err)
	}
	t, ok := m.(T)
	if !ok {
		return zero, fmt.Errorf("%w: want the %s, got %s", ErrHandshake, what, m.Type())
	}
	return t, nil
}
