package listener

import (
	"context"
	"errors"
)

// Upgrade re-executes the olio binary, handing it the listening socket (see upgrade notes).
func (m *Master) Upgrade(ctx context.Context) error {
	return errors.New("hot upgrade is not implemented yet")
}
