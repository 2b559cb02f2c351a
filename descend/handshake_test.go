package descend

import (
	"errors"
	"testing"
)

// Join and Welcome open a connection: the router learns its config and membership.
func TestHandshake(t *testing.T) {
	master, router := pair(t)
	defer master.Close()
	defer router.Close()
	welcomed := make(chan error, 1)
	go func() {
		m, err := master.Recv()
		if h, ok := m.(*Hello); err != nil || !ok || h.Index != 2 || h.PID != 42 {
			welcomed <- errors.New("the master did not read the hello")
			return
		}
		welcomed <- Welcome(master, &Config{Index: 2, Key: "header:X"}, &Membership{Epoch: 3, Workers: 4})
	}()
	cfg, mem, err := Join(router, &Hello{Index: 2, PID: 42})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-welcomed; err != nil {
		t.Fatal(err)
	}
	if cfg.Key != "header:X" || mem.Epoch != 3 || mem.Workers != 4 {
		t.Errorf("joined with %+v and %+v", cfg, mem)
	}
}

// A master that answers out of order, or configures another index, fails the handshake.
func TestHandshakeOutOfOrder(t *testing.T) {
	for name, answer := range map[string][]Message{
		"membership first": {&Membership{Epoch: 1}, &Config{Index: 0}},
		"two configs":      {&Config{Index: 0}, &Config{Index: 0}},
		"another index":    {&Config{Index: 1}, &Membership{Epoch: 1}},
	} {
		master, router := pair(t)
		go func() {
			master.Recv()
			for _, m := range answer {
				master.Send(m)
			}
		}()
		if _, _, err := Join(router, &Hello{Index: 0}); !errors.Is(err, ErrHandshake) {
			t.Errorf("%s: %v, want ErrHandshake", name, err)
		}
		master.Close()
		router.Close()
	}
}
